"""MSN: the loss against lightly, the me-max regulariser, token dropping (cost grows with the kept tokens), the
pretraining model and what `AutoModel` loads."""

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import MSNLoss
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel

from hf_ssl import MSNConfig, MSNForPreTraining, MSNModel
from hf_ssl.modeling.msn.modeling_msn import keep_indices_from_masks, random_keep_indices
from hf_ssl.modeling.losses import msn_loss
from hf_ssl.training.progress import TrainingProgress


def config(**overrides):
    backbone = dict(model_type="ssl_vit", image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2)
    fields = {"projection_hidden_dim": 64, "projection_dim": 16, "num_prototypes": 32, **overrides}
    return MSNConfig(backbone_config=backbone, **fields)


def batch(batch_size=4, seed=0, mask_ratio=0.25):
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(2, batch_size, 64, dtype=torch.bool)
    for view in range(2):
        for image in range(batch_size):
            masks[view, image, torch.randperm(64, generator=generator)[: int(mask_ratio * 64)]] = True
    return dict(global_views=torch.randn(2, batch_size, 3, 32, 32, generator=generator),
                local_views=torch.randn(2, batch_size, 3, 16, 16, generator=generator), masks=masks)


# ---------------------------------------------------------------- loss


@pytest.mark.parametrize("sinkhorn_iterations", [0, 3])
def test_msn_loss_matches_lightly(sinkhorn_iterations):
    torch.manual_seed(0)
    anchors = torch.randn(2 * 6, 8, requires_grad=True)  # 2 anchor views of 6 images, view-major
    targets, prototypes = torch.randn(6, 8), torch.randn(10, 8)
    cosine = lambda z: F.normalize(z, dim=-1) @ F.normalize(prototypes, dim=-1).T  # noqa: E731
    ours, _, _ = msn_loss(cosine(anchors).view(2, 6, 10), cosine(targets), anchor_temp=0.1, target_temp=0.025,
                          me_max_weight=1.0, sinkhorn_iterations=sinkhorn_iterations)
    reference = MSNLoss(temperature=0.1, sinkhorn_iterations=sinkhorn_iterations, regularization_weight=1.0)
    theirs = reference(anchors, targets, prototypes, target_sharpen_temperature=0.25)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(ours, anchors)[0], torch.autograd.grad(theirs, anchors)[0],
                               rtol=1e-4, atol=1e-6)


def test_me_max_is_zero_for_uniform_mean_predictions_and_log_k_for_collapse():
    uniform = torch.zeros(1, 4, 4)  # every anchor uniform over the 4 prototypes
    _, cross_entropy, regulariser = msn_loss(uniform, torch.zeros(4, 4), me_max_weight=1.0)
    assert regulariser.item() == pytest.approx(0.0, abs=1e-6)
    assert cross_entropy.item() == pytest.approx(math.log(4), rel=1e-6)
    collapsed = torch.tensor([100.0, 0.0, 0.0, 0.0]).expand(1, 4, 4)
    _, _, regulariser = msn_loss(collapsed, torch.zeros(4, 4))
    assert regulariser.item() == pytest.approx(math.log(4), rel=1e-4)


def test_keep_indices():
    masks = torch.tensor([[True, False, False, True], [False, True, False, False]])
    assert keep_indices_from_masks(masks).tolist() == [[1, 2], [0, 2]]  # truncated to the fewest kept
    keep = random_keep_indices(3, 64, 0.15, "cpu")
    assert keep.shape == (3, 54) and all(len(set(row.tolist())) == 54 for row in keep)
    assert torch.equal(keep, keep.sort(dim=1).values)


# ---------------------------------------------------------------- model


def test_config_defaults_and_validation():
    default = MSNConfig()
    assert (default.num_prototypes, default.projection_dim, default.mask_ratio) == (1024, 256, 0.15)
    assert default.temperature * default.target_sharpen_temp == pytest.approx(0.025)
    for field, value in [("mask_ratio", 1.0), ("temperature", 0.0), ("num_prototypes", 0), ("me_max_weight", -1)]:
        with pytest.raises(ValueError, match=field):
            config(**{field: value})


def test_forward_drops_the_anchor_patches_and_targets_the_unmasked_view():
    torch.manual_seed(0)
    model = MSNForPreTraining(config()).train()
    seen = []
    model.encoder.backbone.embeddings.register_forward_hook(lambda module, args, output: seen.append(output.shape[1]))
    out = model(**batch())
    assert seen == [1 + 48, 1 + int(round(0.85 * 16))]  # CLS + kept patches of the anchor and the focal crops
    assert set(out.logs) == {"loss", "cross_entropy", "me_max"}
    torch.testing.assert_close(out.loss, out.logs["cross_entropy"] + out.logs["me_max"])
    out.loss.backward()
    assert model.prototypes.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.msn.parameters())
    with pytest.raises(ValueError, match="view 0 is the target"):
        model(global_views=torch.randn(1, 2, 3, 32, 32))


def test_anchor_encoder_cost_scales_with_kept_tokens():
    model = MSNForPreTraining(config(mask_ratio=0.75)).eval()
    views = torch.randn(2, 3, 32, 32)

    def flops(masks):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.anchor_features(views, masks)
        return counter.get_total_flops()

    nothing = torch.zeros(2, 64, dtype=torch.bool)
    three_quarters = nothing.clone()
    three_quarters[:, 16:] = True
    assert 0.0 < flops(three_quarters) / flops(nothing) < 0.35
    assert flops(None) == flops(three_quarters)  # mask_ratio 0.75 drawn in the model


def test_training_lowers_the_loss_and_the_hook_moves_the_target_encoder():
    torch.manual_seed(0)
    model = MSNForPreTraining(config(momentum_teacher=1.0)).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    inputs, losses = batch(), []
    for step in range(6):
        out = model(**inputs)
        losses.append(out.loss.item())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert losses[-1] < 0.9 * losses[0], losses
    model.config.momentum_teacher = 0.5
    before = [p.clone() for p in model.msn.parameters()]
    model.on_step_end(TrainingProgress(step=0, total_steps=10, steps_per_epoch=5))
    for b, a, s in zip(before, model.msn.parameters(), model.encoder.parameters()):
        torch.testing.assert_close(a, 0.5 * b + 0.5 * s)


def test_automodel_loads_the_target_encoder(tmp_path):
    torch.manual_seed(0)
    model = MSNForPreTraining(config())
    with torch.no_grad():
        for parameter in model.msn.parameters():
            parameter.add_(0.01)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is MSNModel
    images = torch.randn(2, 3, 32, 32)
    out = loaded(images, output_hidden_states=True)
    torch.testing.assert_close(out.pooler_output, model.msn(images).pooler_output)
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[:, 0])  # the normed CLS
    assert torch.equal(out.pooler_output, loaded(images).pooler_output)
