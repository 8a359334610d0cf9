"""data2vec (vision): the regression loss, the layer-averaged instance-normed targets, the masked student and EMA
teacher, and what `AutoModel` loads (the student)."""

import pytest
import torch
from transformers import AutoModel

from hf_ssl import Data2VecSSLConfig, Data2VecSSLForPreTraining, Data2VecSSLModel
from hf_ssl.modeling.data2vec_ssl.modeling_data2vec_ssl import data2vec_targets
from hf_ssl.modeling.losses import data2vec_loss
from hf_ssl.training.progress import TrainingProgress


def config(**overrides):
    backbone = dict(model_type="ssl_vit", image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=3,
                    num_attention_heads=2)
    return Data2VecSSLConfig(backbone_config=backbone, **{"top_k_layers": 2, **overrides})


def batch(batch_size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return dict(global_views=torch.randn(1, batch_size, 3, 32, 32, generator=generator),
                masks=torch.rand(1, batch_size, 16, generator=generator) < 0.6)


def test_data2vec_loss_hand_computed():
    predictions = torch.tensor([[0.0, 1.0, 4.0, 0.0]])
    targets = torch.zeros(1, 4)
    # smooth-L1 with beta 2: 0.5 x^2 / 2 below 2 (0, 0.25), x - 1 above (3); summed over D = 4, scaled 1/sqrt(4)
    assert data2vec_loss(predictions, targets, beta=2.0).item() == pytest.approx((0 + 0.25 + 3 + 0) / 2)
    assert data2vec_loss(predictions, targets, beta=0.0, scale=1.0).item() == pytest.approx(17.0)
    with pytest.raises(ValueError, match="beta"):
        data2vec_loss(predictions, targets, beta=-1.0)


def test_targets_average_instance_normed_blocks():
    torch.manual_seed(0)
    blocks = [torch.randn(2, 5, 3) * 4 + 2, torch.randn(2, 5, 3)]
    targets = data2vec_targets(blocks, "instance")
    normed = [(b - b.mean(1, keepdim=True)) / (b.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt() for b in blocks]
    torch.testing.assert_close(targets, (normed[0] + normed[1]) / 2, rtol=1e-4, atol=1e-5)
    # every channel of every image has zero mean over the tokens
    torch.testing.assert_close(targets.mean(dim=1), torch.zeros(2, 3), atol=1e-5, rtol=0)
    layer = data2vec_targets(blocks, "layer", layer_norm_targets=True)
    torch.testing.assert_close(layer.mean(dim=-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="layer_norm"):
        data2vec_targets(blocks, "batch")


def test_config_defaults_and_validation():
    default = Data2VecSSLConfig()
    assert (default.top_k_layers, default.target_layer_norm, default.loss_beta) == (6, "instance", 2.0)
    assert default.backbone_config.pooling == "mean"
    with pytest.raises(ValueError, match="top_k_layers"):
        config(top_k_layers=4)
    with pytest.raises(ValueError, match="target_layer_norm"):
        config(target_layer_norm="batch")


def test_loss_regresses_teacher_targets_at_the_masked_patches_only():
    torch.manual_seed(0)
    model = Data2VecSSLForPreTraining(config())
    with torch.no_grad():
        for parameter in model.teacher.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    inputs = batch()
    images, masks = inputs["global_views"][0], inputs["masks"][0]
    with torch.no_grad():
        hidden = model.teacher(images, output_hidden_states=True).hidden_states
        targets = data2vec_targets([hidden[-2][:, 1:], hidden[-1][:, 1:]])[masks]
        student = model.data2vec(images, bool_masked_pos=masks).last_hidden_state[:, 1:]
        expected = data2vec_loss(model.regression_head(student[masks]), targets)
    out = model(**inputs)
    torch.testing.assert_close(out.loss, expected)
    assert out.logs["mask_ratio"].item() == pytest.approx(masks.float().mean().item())
    with pytest.raises(ValueError, match="masks"):
        model(global_views=inputs["global_views"])


def test_training_lowers_the_loss_and_anneals_the_ema():
    torch.manual_seed(0)
    model = Data2VecSSLForPreTraining(config(momentum_teacher=0.9, momentum_teacher_end=0.99))
    assert model.momentum_at_step(5, 10) == pytest.approx(0.945)
    assert model.momentum_at_step(20, 10) == pytest.approx(0.99)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    inputs, losses = batch(), []
    for step in range(6):
        before = [p.clone() for p in model.teacher.parameters()]
        out = model(**inputs)
        losses.append(out.loss.item())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        model.on_step_end(TrainingProgress(step=step, total_steps=6, steps_per_epoch=3))
        momentum = model.momentum_at_step(step, 6)
        for b, a, s in zip(before, model.teacher.parameters(), model.data2vec.parameters()):
            torch.testing.assert_close(a, momentum * b + (1 - momentum) * s)
    assert losses[-1] < 0.9 * losses[0], losses


def test_automodel_loads_the_student_pooled_on_patch_tokens(tmp_path):
    model = Data2VecSSLForPreTraining(config())
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is Data2VecSSLModel
    images = torch.randn(2, 3, 32, 32)
    out = loaded(images)
    torch.testing.assert_close(out.pooler_output, model.data2vec(images).last_hidden_state[:, 1:].mean(dim=1))
    assert torch.equal(out.pooler_output, loaded(images).pooler_output)
