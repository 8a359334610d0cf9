"""DINOv2: Sinkhorn-Knopp centering, KoLeo, separate DINO/iBOT heads, registers, the temperature warm-up, and what
`AutoModel` loads."""

import math

import pytest
import torch
from lightly.loss import KoLeoLoss
from lightly.loss.msn_loss import sinkhorn as lightly_sinkhorn
from transformers import AutoModel

from hf_ssl import Dinov2SSLConfig, Dinov2SSLForPreTraining, Dinov2SSLModel, SSLViTConfig
from hf_ssl.modeling.losses import koleo_loss, sinkhorn_knopp, sinkhorn_knopp_teacher_probs
from hf_ssl.training.progress import TrainingProgress

HEAD = dict(head_out_dim=64, patch_out_dim=48, head_hidden_dim=256, head_bottleneck_dim=64)


def vit(**overrides):
    return SSLViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        **overrides).to_dict()


def batch(batch_size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return dict(
        global_views=torch.randn(2, batch_size, 3, 32, 32, generator=generator),
        local_views=torch.randn(2, batch_size, 3, 16, 16, generator=generator),
        masks=torch.rand(2, batch_size, 16, generator=generator) < 0.4,
    )


# ---------------------------------------------------------------- Sinkhorn-Knopp and KoLeo


def test_sinkhorn_knopp_matches_lightly_and_equipartitions():
    """MSN's use: Sinkhorn-Knopp on probabilities p, i.e. from exp(log p / 1)."""
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(12, 5) * 3, dim=-1)
    ours = sinkhorn_knopp(probs.log(), epsilon=1.0, iterations=3)
    torch.testing.assert_close(ours, lightly_sinkhorn(probs, iterations=3))
    torch.testing.assert_close(ours.sum(dim=1), torch.ones(12))  # each row a distribution
    converged = sinkhorn_knopp(probs.log(), epsilon=1.0, iterations=200)
    torch.testing.assert_close(converged.sum(dim=0), torch.full((5,), 12 / 5), rtol=1e-4, atol=1e-4)


def test_sinkhorn_knopp_teacher_probs_is_dinov2_formula():
    """DINOv2's `sinkhorn_knopp_teacher`, by hand: Q = exp(l / tau)^T, Q /= sum, then 3 x (rows /= row sums, /= K;
    columns /= column sums, /= B), Q *= B; the max subtraction must not change it."""
    torch.manual_seed(0)
    logits, tau = torch.randn(6, 4), 0.1
    q = torch.exp(logits / tau).T.double()
    q /= q.sum()
    for _ in range(3):
        q /= q.sum(dim=1, keepdim=True)
        q /= 4
        q /= q.sum(dim=0, keepdim=True)
        q /= 6
    expected = (q * 6).T.float()
    torch.testing.assert_close(sinkhorn_knopp_teacher_probs(logits, tau), expected)
    # exp((l + 100) / 0.1) overflows; the subtracted maximum cancels and keeps it exact
    torch.testing.assert_close(sinkhorn_knopp_teacher_probs(logits + 100, tau), expected)


def test_koleo_hand_computed_and_matches_lightly():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # normalised: (1, 0), (0, 1), (s, s) with s = 1/sqrt(2)
    near = math.sqrt((1 - 1 / math.sqrt(2)) ** 2 + 0.5)  # each axis point's nearest neighbour is the diagonal one
    expected = -(math.log(near + 1e-8) * 3) / 3
    assert koleo_loss(x).item() == pytest.approx(expected, rel=1e-5)
    torch.manual_seed(0)
    features = torch.randn(16, 8, requires_grad=True)
    ours = koleo_loss(features)
    theirs = KoLeoLoss()(features)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(torch.autograd.grad(ours, features)[0], torch.autograd.grad(theirs, features)[0])
    with pytest.raises(ValueError, match="n >= 2"):
        koleo_loss(torch.randn(1, 4))


# ---------------------------------------------------------------- config and model


def test_config_defaults_and_validation():
    config = Dinov2SSLConfig()
    assert (config.head_out_dim, config.patch_out_dim, config.shared_head) == (65536, 65536, False)
    assert (config.centering, config.sinkhorn_iterations, config.koleo_loss_weight) == ("sinkhorn_knopp", 3, 0.1)
    assert (config.warmup_teacher_temp, config.teacher_temp, config.warmup_teacher_temp_epochs) == (0.04, 0.07, 30)
    assert config.momentum_teacher == 0.992
    for field, value in [("centering", "mean"), ("sinkhorn_iterations", 0), ("koleo_loss_weight", -0.1)]:
        with pytest.raises(ValueError, match=field):
            Dinov2SSLConfig(backbone_config=vit(), **{field: value})


def test_forward_adds_koleo_per_global_crop_and_uses_separate_heads():
    torch.manual_seed(0)
    model = Dinov2SSLForPreTraining(Dinov2SSLConfig(backbone_config=vit(num_register_tokens=2), **HEAD)).train()
    assert model.student_patch_head is not None and model.teacher_patch_head.last_layer.out_features == 48
    inputs = batch()
    with torch.no_grad():
        cls = model.student(inputs["global_views"].flatten(0, 1), bool_masked_pos=inputs["masks"].flatten(0, 1))
        koleo = koleo_loss(cls.pooler_output[:4]) + koleo_loss(cls.pooler_output[4:])
    out = model(**inputs)
    torch.testing.assert_close(out.logs["koleo_loss"], koleo, rtol=1e-4, atol=1e-4)
    total = out.logs["cls_loss"] + out.logs["patch_loss"] + 0.1 * koleo
    torch.testing.assert_close(out.loss, total, rtol=1e-4, atol=1e-4)
    assert torch.count_nonzero(model.center) == 0  # Sinkhorn-Knopp: no centre to update
    out.loss.backward()
    assert model.student_patch_head.weight_v.grad.abs().sum() > 0


def test_sinkhorn_targets_are_equipartitioned_over_the_batch():
    model = Dinov2SSLForPreTraining(Dinov2SSLConfig(backbone_config=vit(), **HEAD))
    logits = torch.randn(2, 5, 64)
    targets = model.teacher_targets(logits, model.center, torch.tensor(0.04))
    torch.testing.assert_close(targets.sum(-1), torch.ones(2, 5))
    expected = sinkhorn_knopp_teacher_probs(logits.flatten(0, 1), 0.04).view(2, 5, 64)
    torch.testing.assert_close(targets, expected)


def test_centering_option_updates_the_centres():
    model = Dinov2SSLForPreTraining(Dinov2SSLConfig(backbone_config=vit(), centering="centering", **HEAD)).train()
    model(**batch())
    assert torch.count_nonzero(model.center) > 0 and torch.count_nonzero(model.patch_center) > 0


def test_teacher_temperature_warm_up_over_30_epochs():
    model = Dinov2SSLForPreTraining(Dinov2SSLConfig(backbone_config=vit(), **HEAD))
    assert model.teacher_temps_at_epoch(0) == (0.04, 0.04)
    assert model.teacher_temps_at_epoch(29) == pytest.approx((0.07, 0.07))
    assert model.teacher_temps_at_epoch(15)[0] == pytest.approx(0.04 + 0.03 * 15 / 29)
    model.on_step_end(TrainingProgress(step=9, total_steps=100, steps_per_epoch=10))  # epoch 1 starts
    assert model.teacher_temperature.item() == pytest.approx(0.04 + 0.03 / 29)


def test_training_steps_lower_the_loss_against_fixed_targets():
    config = Dinov2SSLConfig(backbone_config=vit(), momentum_teacher=1.0, freeze_last_layer_epochs=0,
                             koleo_loss_weight=0.0, **HEAD)
    torch.manual_seed(0)
    model = Dinov2SSLForPreTraining(config).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    inputs, losses = batch(), []
    for step in range(6):
        out = model(**inputs)
        losses.append(out.loss.item())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        model.on_step_end(TrainingProgress(step=step, total_steps=6, steps_per_epoch=3))
    assert losses[-1] < 0.9 * losses[0], losses


def test_automodel_loads_the_teacher_registers_are_never_pooled(tmp_path):
    torch.manual_seed(0)
    model = Dinov2SSLForPreTraining(Dinov2SSLConfig(backbone_config=vit(num_register_tokens=2,
                                                                        layerscale_value=1e-5), **HEAD))
    with torch.no_grad():
        model.dinov2.backbone.embeddings.register_tokens.normal_()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is Dinov2SSLModel and loaded.config.backbone_config.num_register_tokens == 2
    for (name, a), (_, b) in zip(loaded.state_dict().items(), model.dinov2.state_dict().items()):
        assert torch.equal(a, b), name
    images = torch.randn(2, 3, 32, 32)
    out = loaded(images)
    assert out.last_hidden_state.shape[1] == 1 + 2 + 16
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[:, 0])
    assert torch.equal(out.pooler_output, loaded(images).pooler_output)
