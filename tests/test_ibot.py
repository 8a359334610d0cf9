"""iBOT: the masked-patch loss, the pretraining model (masked student, unmasked EMA teacher, shared or separate
heads), its hooks, and what `AutoModel` loads from its checkpoints."""

import math

import pytest
import torch
from lightly.loss import IBOTPatchLoss
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from hf_ssl import IBOTConfig, IBOTForPreTraining, IBOTModel, SSLResNetConfig
from hf_ssl.modeling.losses import dino_loss, ibot_patch_loss
from hf_ssl.training.progress import TrainingProgress

from helpers import train_steps

HEAD = dict(head_out_dim=64, patch_out_dim=64, head_hidden_dim=256, head_bottleneck_dim=64)


@pytest.fixture
def ibot_config(tiny_vit_config):
    return IBOTConfig(backbone_config=tiny_vit_config.to_dict(), **HEAD)


def batch(batch_size=3, seed=0, mask_ratio=0.4):
    generator = torch.Generator().manual_seed(seed)
    return dict(
        global_views=torch.randn(2, batch_size, 3, 32, 32, generator=generator),
        local_views=torch.randn(2, batch_size, 3, 16, 16, generator=generator),
        masks=torch.rand(2, batch_size, 16, generator=generator) < mask_ratio,
    )


# ---------------------------------------------------------------- loss


def test_ibot_patch_loss_hand_computed():
    # two images, three patches, K = 2; image 0 masks patches 0 and 2, image 1 nothing.
    masks = torch.tensor([[True, False, True], [False, False, False]])
    student = torch.tensor([[0.0, 1.0], [2.0, 0.0]])  # the two masked patches, in masks.nonzero() order
    teacher = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    tau = 0.5

    def cross_entropy(p, logits):
        exps = [math.exp(v / tau) for v in logits]
        return -sum(pi * math.log(e / sum(exps)) for pi, e in zip(p, exps))

    per_image = [(cross_entropy([0.25, 0.75], [0.0, 1.0]) + cross_entropy([0.5, 0.5], [2.0, 0.0])) / 2, 0.0]
    expected = sum(per_image) / 2  # the unmasked image counts with 0
    assert ibot_patch_loss(student, teacher, masks, tau).item() == pytest.approx(expected, rel=1e-6)


def test_ibot_patch_loss_matches_lightly():
    torch.manual_seed(0)
    masks = torch.rand(4, 3, 3) < 0.5
    masks[0] = False
    num_masked = int(masks.sum())
    teacher_logits, student_logits = torch.randn(num_masked, 16), torch.randn(num_masked, 16)
    reference = IBOTPatchLoss(output_dim=16, teacher_temp=0.07, student_temp=0.1)
    expected = reference(teacher_logits, student_logits, masks)
    teacher_probs = torch.softmax(teacher_logits / 0.07, dim=-1)
    torch.testing.assert_close(ibot_patch_loss(student_logits, teacher_probs, masks.flatten(1), 0.1), expected)


def test_ibot_patch_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="bool"):
        ibot_patch_loss(torch.randn(2, 4), torch.rand(2, 4), torch.ones(1, 2), 0.1)
    with pytest.raises(ValueError, match="one shape"):
        ibot_patch_loss(torch.randn(2, 4), torch.rand(3, 4), torch.ones(1, 2, dtype=torch.bool), 0.1)


# ---------------------------------------------------------------- config


def test_config_defaults_and_validation(tiny_vit_config):
    config = IBOTConfig()
    assert (config.head_out_dim, config.patch_out_dim, config.shared_head, config.norm_last_layer) == (
        8192, 8192, True, False)
    assert (config.warmup_teacher_temp, config.teacher_temp, config.warmup_teacher_temp_epochs) == (0.04, 0.07, 30)
    for fields, match in [
        (dict(patch_out_dim=32), "shared_head"),
        (dict(patch_teacher_temp=0.0), "patch_teacher_temp"),
        (dict(patch_center_momentum=2.0), "patch_center_momentum"),
        (dict(patch_loss_weight=-1.0), "patch_loss_weight"),
        (dict(head_out_dim=0, shared_head=False), "head_out_dim"),
    ]:
        with pytest.raises(ValueError, match=match):
            IBOTConfig(backbone_config=tiny_vit_config.to_dict(), **fields)
    with pytest.raises(ValueError, match="ssl_vit"):
        IBOTForPreTraining(IBOTConfig(backbone_config=SSLResNetConfig(depth=18)))


def test_auto_classes_build_the_pretraining_model(tiny_vit_config):
    config = AutoConfig.for_model("ibot", backbone_config=tiny_vit_config.to_dict(), **HEAD)
    assert type(AutoModelForPreTraining.from_config(config)) is IBOTForPreTraining


# ---------------------------------------------------------------- pretraining model


def test_initial_state(ibot_config):
    model = IBOTForPreTraining(ibot_config)
    assert isinstance(model.ibot, IBOTModel) and model.student_patch_head is None and model.teacher_patch_head is None
    for (name, t), (_, s) in zip(model.ibot.named_parameters(), model.student.named_parameters()):
        assert torch.equal(t, s) and not t.requires_grad, name
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"student", "student_head"}


def test_loss_is_dino_plus_masked_patch_distillation(ibot_config):
    """Recompute both terms from the model's parts: the student's CLS of the masked global crops and of the local
    crops, the teacher's CLS and patch tokens of the unmasked crops, the masked patches only."""
    torch.manual_seed(0)
    model = IBOTForPreTraining(ibot_config).train()
    model.center.normal_()
    model.patch_center.normal_()
    inputs = batch()
    masks = inputs["masks"].flatten(0, 1)
    with torch.no_grad():
        student = model.student(inputs["global_views"].flatten(0, 1), bool_masked_pos=masks)
        local = model.student(inputs["local_views"].flatten(0, 1)).pooler_output
        student_cls = model.student_head(torch.cat([student.pooler_output, local])).view(4, 3, -1)
        student_patches = model.student_head(student.last_hidden_state[:, 1:][masks])
        teacher = model.ibot(inputs["global_views"].flatten(0, 1))
        teacher_cls = model.teacher_head(teacher.pooler_output).view(2, 3, -1)
        teacher_patches = model.teacher_head(teacher.last_hidden_state[:, 1:][masks])
        temp = model.teacher_temperature
        cls_loss = dino_loss(student_cls, teacher_cls, model.center, 0.1, temp)
        patch_targets = torch.softmax((teacher_patches - model.patch_center) / model.patch_teacher_temperature, -1)
        patch_loss = ibot_patch_loss(student_patches, patch_targets, masks, 0.1)
    out = model(**inputs)
    torch.testing.assert_close(out.logs["cls_loss"], cls_loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.logs["patch_loss"], patch_loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.loss, cls_loss + patch_loss, rtol=1e-4, atol=1e-5)
    assert out.logs["mask_ratio"].item() == pytest.approx(masks.float().mean().item())


def test_patch_loss_depends_only_on_masked_positions(ibot_config):
    """The targets are computed on the masked patches only: the (shared) teacher head sees the 2 x 3 global CLS
    tokens plus one row per masked patch."""
    model = IBOTForPreTraining(ibot_config)
    rows = []
    model.teacher_head.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0]))
    inputs = batch()
    model(**inputs)
    assert rows == [6 + int(inputs["masks"].sum())]


def test_without_masks_ibot_is_dino(ibot_config):
    model = IBOTForPreTraining(ibot_config)
    inputs = batch()
    inputs.pop("masks")
    out = model(**inputs)
    assert "patch_loss" not in out.logs
    torch.testing.assert_close(out.loss, out.logs["cls_loss"])


def test_separate_heads(tiny_vit_config):
    config = IBOTConfig(backbone_config=tiny_vit_config.to_dict(), **{**HEAD, "patch_out_dim": 48}, shared_head=False)
    model = IBOTForPreTraining(config)
    assert model.student_patch_head.last_layer.out_features == 48 and model.patch_center.shape == (1, 48)
    out = model(**batch())
    out.loss.backward()
    assert model.student_patch_head.weight_v.grad.abs().sum() > 0


def test_bad_masks_are_rejected(ibot_config):
    model = IBOTForPreTraining(ibot_config)
    inputs = batch()
    with pytest.raises(ValueError, match="masks"):
        model(**{**inputs, "masks": inputs["masks"][:, :, :8]})
    with pytest.raises(ValueError, match="masks"):
        model(**{**inputs, "masks": inputs["masks"].long()})


def test_training_steps_lower_the_loss_against_fixed_targets(tiny_vit_config):
    config = IBOTConfig(backbone_config=tiny_vit_config.to_dict(), momentum_teacher=1.0, center_momentum=1.0,
                        patch_center_momentum=1.0, freeze_last_layer_epochs=0, **HEAD)
    torch.manual_seed(0)
    model = IBOTForPreTraining(config).train()
    logs = train_steps(model, batch(), 6, lr=1e-4, steps_per_epoch=2)
    assert logs[-1]["cls_loss"] < 0.9 * logs[0]["cls_loss"], logs
    assert logs[-1]["patch_loss"] < 0.9 * logs[0]["patch_loss"], logs


def test_hooks_schedule_temperatures_and_move_the_teacher(tiny_vit_config):
    config = IBOTConfig(backbone_config=tiny_vit_config.to_dict(), warmup_teacher_temp_epochs=3,
                        warmup_patch_teacher_temp=0.02, patch_teacher_temp=0.05, **HEAD)
    model = IBOTForPreTraining(config)
    assert model.teacher_temps_at_epoch(0) == (0.04, 0.02)
    assert model.teacher_temps_at_epoch(1) == pytest.approx((0.055, 0.035))
    assert model.teacher_temps_at_epoch(5) == (0.07, 0.05)
    with torch.no_grad():
        for parameter in model.student.parameters():
            parameter.add_(0.1)
    before = [p.clone() for p in model.ibot.parameters()]
    model.on_step_end(TrainingProgress(step=1, total_steps=4, steps_per_epoch=2))
    momentum = model.momentum_at_step(1, 4)
    for b, a, s in zip(before, model.ibot.parameters(), model.student.parameters()):
        torch.testing.assert_close(a, momentum * b + (1 - momentum) * s)
    assert model.teacher_temperature.item() == pytest.approx(0.055)
    assert model.patch_teacher_temperature.item() == pytest.approx(0.035)


def test_automodel_loads_the_teacher_and_is_deterministic(ibot_config, tmp_path):
    torch.manual_seed(0)
    model = IBOTForPreTraining(ibot_config)
    with torch.no_grad():
        for parameter in model.ibot.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is IBOTModel
    for (name, a), (_, b) in zip(loaded.state_dict().items(), model.ibot.state_dict().items()):
        assert torch.equal(a, b), name
    images = torch.randn(2, 3, 32, 32)
    first, second = loaded(images).pooler_output, loaded(images).pooler_output
    assert torch.equal(first, second)
    torch.testing.assert_close(first, loaded(images).last_hidden_state[:, 0])
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert not any(p.requires_grad for p in reloaded.ibot.parameters())
