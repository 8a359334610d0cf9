"""I-JEPA: the loss, the predictor, the context/target encoders (cost grows with the visible tokens), the EMA
schedule, and what `AutoModel` loads."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel

from hf_ssl import IJepaSSLConfig, IJepaSSLForPreTraining, IJepaSSLModel
from hf_ssl.modeling.heads import JEPAPredictor
from hf_ssl.modeling.losses import ijepa_loss
from hf_ssl.processing.masking import MultiBlockMaskGenerator
from hf_ssl.processing.views import collate_views
from hf_ssl.training.progress import TrainingProgress

GRID = 8


def config(**overrides):
    backbone = dict(model_type="ssl_vit", image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2)
    return IJepaSSLConfig(backbone_config=backbone, **{"predictor_hidden_size": 16, "predictor_num_hidden_layers": 2,
                                                        **overrides})


def batch(batch_size=3, seed=0):
    """Images and multi-block masks collated as the data loader does (truncated to the batch's shortest)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(1, batch_size, 3, 32, 32, generator=generator)
    masks = MultiBlockMaskGenerator()
    samples = []
    for _ in range(batch_size):
        context, targets = masks(GRID, GRID, generator=generator)
        samples.append(({"global_views": [torch.zeros(1)], "context_indices": [context],
                         "target_indices": [targets]}, None))
    collated = collate_views(samples)
    return dict(global_views=images, context_indices=collated["context_indices"],
                target_indices=collated["target_indices"])


# ---------------------------------------------------------------- loss and predictor


def test_ijepa_loss_hand_computed():
    predictions = torch.tensor([[0.0, 0.5, 3.0]])
    targets = torch.tensor([[0.0, 0.0, 0.0]])
    # smooth-L1 (beta 1): 0.5 x^2 for |x| < 1, |x| - 0.5 otherwise; mean over elements
    assert ijepa_loss(predictions, targets).item() == pytest.approx((0 + 0.125 + 2.5) / 3)
    assert ijepa_loss(predictions, targets, "mse").item() == pytest.approx((0 + 0.25 + 9) / 3)
    with pytest.raises(ValueError, match="loss_type"):
        ijepa_loss(predictions, targets, "l1")
    with pytest.raises(ValueError, match="shape"):
        ijepa_loss(predictions, targets[:, :2])


def test_predictor_predicts_each_block_on_its_own():
    torch.manual_seed(0)
    predictor = JEPAPredictor(32, GRID, hidden_size=16, num_hidden_layers=2, num_attention_heads=2).eval()
    context = torch.randn(2, 5, 32)
    context_indices = torch.randint(0, GRID * GRID, (2, 5))
    targets = torch.randint(0, GRID * GRID, (3, 2, 4))
    out = predictor(context, context_indices, targets, GRID)
    assert out.shape == (3, 2, 4, 32)
    # block 0 alone gives the same predictions: the blocks do not see each other
    torch.testing.assert_close(predictor(context, context_indices, targets[:1], GRID), out[:1])
    # the target positions matter (sin-cos table of the grid)
    moved = predictor(context, context_indices, (targets + 1) % (GRID * GRID), GRID)
    assert not torch.allclose(moved, out)
    # initialisation: residual projections of block l divided by sqrt(2 l) on top of trunc_normal(0.02)
    assert predictor.layers[1].attn.proj.weight.std().item() == pytest.approx(0.02 / 2, rel=0.2)


# ---------------------------------------------------------------- config and model


def test_config_defaults():
    default = IJepaSSLConfig()
    assert default.backbone_config.use_cls_token is False and default.backbone_config.pooling == "mean"
    assert default.backbone_config.position_embedding_type == "sincos"
    assert (default.predictor_hidden_size, default.predictor_num_hidden_layers, default.momentum_teacher) == (
        384, 12, 0.996)
    with pytest.raises(ValueError, match="loss_type"):
        config(loss_type="l1")
    with pytest.raises(ValueError, match="divisible"):
        config(predictor_hidden_size=15)


def test_loss_regresses_layer_normed_target_features_at_the_targets():
    torch.manual_seed(0)
    model = IJepaSSLForPreTraining(config())
    with torch.no_grad():
        for parameter in model.ijepa.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    inputs = batch()
    images = inputs["global_views"][0]
    context, targets = inputs["context_indices"][0], inputs["target_indices"][0]
    with torch.no_grad():
        full = F.layer_norm(model.ijepa(images).last_hidden_state, (32,))
        expected_targets = torch.stack([full.gather(1, t.unsqueeze(-1).expand(-1, -1, 32)) for t in targets])
        context_tokens = model.encoder(images, keep_indices=context).last_hidden_state
        predictions = model.predictor(context_tokens, context, targets, GRID)
        expected = F.smooth_l1_loss(predictions, expected_targets)
    out = model(**inputs)
    torch.testing.assert_close(out.loss, expected)
    assert context_tokens.shape[1] == context.shape[1] < GRID * GRID  # the context encoder sees the context only


def test_context_encoder_cost_scales_with_visible_tokens():
    model = IJepaSSLForPreTraining(config())
    images = torch.randn(2, 3, 32, 32)

    def flops(keep):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.encoder(images, keep_indices=keep)
        return counter.get_total_flops()

    everything = torch.arange(GRID * GRID).expand(2, -1)
    quarter = everything[:, : GRID * GRID // 4]
    assert 0.0 < flops(quarter) / flops(everything) < 0.3


def test_missing_masks_are_rejected():
    with pytest.raises(ValueError, match="multiblock"):
        IJepaSSLForPreTraining(config())(global_views=torch.randn(1, 2, 3, 32, 32))


def test_training_lowers_the_loss_and_moves_the_target_encoder_linearly():
    torch.manual_seed(0)
    model = IJepaSSLForPreTraining(config(momentum_teacher=0.9))
    assert model.momentum_at_step(0, 10) == 0.9 and model.momentum_at_step(5, 10) == pytest.approx(0.95)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    inputs, losses = batch(), []
    for step in range(8):
        before = [p.clone() for p in model.ijepa.parameters()]
        out = model(**inputs)
        losses.append(out.loss.item())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        model.on_step_end(TrainingProgress(step=step, total_steps=8, steps_per_epoch=4))
        momentum = model.momentum_at_step(step, 8)
        for b, a, s in zip(before, model.ijepa.parameters(), model.encoder.parameters()):
            torch.testing.assert_close(a, momentum * b + (1 - momentum) * s)
    assert losses[-1] < 0.9 * losses[0], losses


def test_automodel_loads_the_target_encoder_pooled_on_patch_tokens(tmp_path):
    torch.manual_seed(0)
    model = IJepaSSLForPreTraining(config())
    with torch.no_grad():
        for parameter in model.ijepa.parameters():
            parameter.add_(0.01)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is IJepaSSLModel
    images = torch.randn(2, 3, 32, 32)
    out = loaded(images)
    torch.testing.assert_close(out.pooler_output, model.ijepa(images).last_hidden_state.mean(dim=1))
    assert out.last_hidden_state.shape[1] == GRID * GRID  # no CLS token
    assert torch.equal(out.pooler_output, loaded(images).pooler_output)
    reloaded = type(model).from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.predictor.position_embeddings, model.predictor.position_embeddings)
