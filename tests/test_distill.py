"""Distillation: Hinton et al.'s temperature-softmax loss, and DINOv2-style distillation of a frozen teacher (an
hf_ssl pretraining checkpoint with its heads, or any transformers model with fresh heads) into a smaller student."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForPreTraining, Dinov2Config

from hf_ssl import Dinov2SSLConfig, Dinov2SSLForPreTraining, DistillConfig, DistillForPreTraining, DistillModel
from hf_ssl.modeling.losses import hinton_distillation_loss
from hf_ssl.training.progress import TrainingProgress

HEAD = dict(head_out_dim=64, patch_out_dim=48, head_hidden_dim=128, head_bottleneck_dim=32)


def vit(hidden_size=32, layers=2, heads=2):
    return dict(model_type="ssl_vit", image_size=32, patch_size=8, hidden_size=hidden_size,
                num_hidden_layers=layers, num_attention_heads=heads)


def batch(batch_size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return dict(global_views=torch.randn(2, batch_size, 3, 32, 32, generator=generator),
                local_views=torch.randn(2, batch_size, 3, 16, 16, generator=generator))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A (random) DINOv2 pretraining checkpoint, wider and deeper than the student."""
    torch.manual_seed(0)
    teacher = Dinov2SSLForPreTraining(Dinov2SSLConfig(backbone_config=vit(48, 3, 2), **HEAD))
    path = tmp_path_factory.mktemp("teacher")
    teacher.save_pretrained(path)
    return path, teacher


# ---------------------------------------------------------------- Hinton et al.


def test_hinton_loss_hand_computed():
    student, teacher, temperature = [1.0, 0.0, -1.0], [0.0, 2.0, 0.0], 2.0

    def softmax(values):
        exps = [math.exp(v / temperature) for v in values]
        return [e / sum(exps) for e in exps]

    p, q = softmax(teacher), softmax(student)
    expected = temperature**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    loss = hinton_distillation_loss(torch.tensor([student]), torch.tensor([teacher]), temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_hinton_loss_is_zero_for_equal_logits_and_scales_its_gradient_by_t():
    torch.manual_seed(0)
    logits = torch.randn(5, 10)
    assert hinton_distillation_loss(logits, logits, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    # the T^2 factor: for large T the gradient approaches (z_s - z_t) / (N B) whatever T (Hinton et al., Sec. 2.1)
    student = torch.randn(5, 10, requires_grad=True)
    teacher = torch.randn(5, 10)
    grads = []
    for temperature in (50.0, 100.0):
        (grad,) = torch.autograd.grad(hinton_distillation_loss(student, teacher, temperature), student)
        grads.append(grad)
    zero_mean = lambda z: z - z.mean(dim=1, keepdim=True)  # noqa: E731
    expected = (zero_mean(student) - zero_mean(teacher)).detach() / (10 * 5)
    for grad in grads:
        torch.testing.assert_close(grad, expected, rtol=0.05, atol=1e-4)
    with pytest.raises(ValueError, match="temperature"):
        hinton_distillation_loss(logits, logits, 0.0)


def test_hinton_loss_matches_kl_div_of_softmaxes():
    torch.manual_seed(1)
    student, teacher = torch.randn(4, 6), torch.randn(4, 6)
    p = F.softmax(teacher / 4, dim=-1)
    expected = (p * (p.log() - F.log_softmax(student / 4, dim=-1))).sum(-1).mean() * 16
    torch.testing.assert_close(hinton_distillation_loss(student, teacher, 4.0), expected)


# ---------------------------------------------------------------- DINOv2-style distillation


def test_teacher_with_its_heads_is_loaded_frozen_and_in_eval_mode(teacher_dir):
    path, teacher = teacher_dir
    model = DistillForPreTraining(DistillConfig(backbone_config=vit(), teacher_name_or_path=str(path), **HEAD)).train()
    assert model.config.teacher_heads is True and model.config.teacher_config["model_type"] == "dinov2_ssl"
    for name, module in [("dinov2", model.teacher), ("teacher_head", model.teacher_head),
                         ("teacher_patch_head", model.teacher_patch_head)]:
        expected = getattr(teacher, name).state_dict()
        for key, value in module.state_dict().items():
            assert torch.equal(value, expected[key]), (name, key)
        assert not module.training and not any(p.requires_grad for p in module.parameters())
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"student", "student_head", "student_patch_head"}


def test_training_moves_the_student_and_its_ema_never_the_teacher(teacher_dir):
    path, _ = teacher_dir
    torch.manual_seed(0)
    config = DistillConfig(backbone_config=vit(), teacher_name_or_path=str(path), freeze_last_layer_epochs=0,
                           koleo_loss_weight=0.0, **HEAD)
    model = DistillForPreTraining(config).train()
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    inputs, losses = batch(), []
    for step in range(6):
        out = model(**inputs)
        losses.append(out.loss.item())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        model.on_step_end(TrainingProgress(step=step, total_steps=6, steps_per_epoch=3))
    assert losses[-1] < 0.9 * losses[0], losses
    assert out.logs["mask_ratio"].item() == 1.0  # no masking: the patch loss covers every patch
    assert all(torch.equal(v, model.teacher.state_dict()[k]) for k, v in teacher_before.items())
    ema_moved = any(not torch.equal(a, b) for a, b in zip(model.distill.parameters(), model.student.parameters()))
    assert ema_moved and model.teacher_head.training is False


def test_checkpoint_round_trip_and_automodel(teacher_dir, tmp_path):
    path, _ = teacher_dir
    model = DistillForPreTraining(DistillConfig(backbone_config=vit(), teacher_name_or_path=str(path), **HEAD))
    with torch.no_grad():
        for parameter in model.distill.parameters():
            parameter.add_(0.01)
    model.save_pretrained(tmp_path)
    # the teacher's own files are not needed to rebuild it: the config holds its config, the checkpoint its weights
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path, teacher_name_or_path=None)
    for (name, a), (_, b) in zip(reloaded.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    encoder = AutoModel.from_pretrained(tmp_path)
    assert type(encoder) is DistillModel
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(encoder(images).pooler_output, model.distill(images).pooler_output)


def test_transformers_teacher_gets_fresh_frozen_heads():
    teacher_config = Dinov2Config(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=96)
    config = DistillConfig(backbone_config=vit(), teacher_config=teacher_config.to_dict(), **HEAD)
    model = DistillForPreTraining(config)
    assert config.teacher_heads is False and type(model.teacher).__name__ == "Dinov2Model"
    assert model.teacher_head.mlp.layers[0].in_features == 48
    out = model(**batch())
    out.loss.backward()
    assert torch.isfinite(out.loss) and not any(p.requires_grad for p in model.teacher_head.parameters())


def test_bad_teachers_are_rejected(teacher_dir):
    path, _ = teacher_dir
    with pytest.raises(ValueError, match="needs a teacher"):
        DistillForPreTraining(DistillConfig(backbone_config=vit(), **HEAD))
    with pytest.raises(ValueError, match="prototypes"):
        DistillForPreTraining(DistillConfig(backbone_config=vit(), teacher_name_or_path=str(path),
                                            **{**HEAD, "head_out_dim": 32}))
    with pytest.raises(ValueError, match="patch size"):
        DistillForPreTraining(DistillConfig(backbone_config={**vit(), "patch_size": 4},
                                            teacher_name_or_path=str(path), **HEAD))
