"""DINO: the head, the pretraining model, its step hooks and what `AutoModel` loads from its checkpoints."""

import pytest
import torch
from lightly.loss import DINOLoss
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from hf_ssl import DinoConfig, DinoForPreTraining, DinoModel, SSLResNetConfig
from hf_ssl.modeling.heads import DinoHead
from hf_ssl.training.progress import TrainingProgress

from helpers import train_losses, train_steps

# A head wide enough that the bottleneck before the L2 normalisation is not vanishingly small (trunc_normal(0.02)
# weights shrink narrow layers), which would make the loss too sharp for a few plain AdamW steps.
HEAD = dict(head_out_dim=64, head_hidden_dim=256, head_bottleneck_dim=64)


@pytest.fixture
def dino_config(tiny_vit_config):
    return DinoConfig(backbone_config=tiny_vit_config.to_dict(), **HEAD)


def views(batch=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return dict(
        global_views=torch.randn(2, batch, 3, 32, 32, generator=generator),
        local_views=torch.randn(4, batch, 3, 16, 16, generator=generator),
    )


def perturb_(module, scale=0.05):
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn_like(parameter))


# ---------------------------------------------------------------- head


def test_dino_head_init_matches_the_original():
    torch.manual_seed(0)
    head = DinoHead(256, 1000, hidden_dim=512, bottleneck_dim=256, num_layers=3)
    linears = [m for m in head.mlp.layers if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 and isinstance(head.mlp.layers[1], torch.nn.GELU)
    for linear in linears:
        assert linear.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert torch.count_nonzero(linear.bias) == 0
    assert torch.equal(head.weight_g, torch.ones(1000, 1))
    bound = 1 / 256**0.5  # PyTorch's default Linear init for v: uniform(-1/sqrt(in), 1/sqrt(in))
    assert head.weight_v.abs().max() <= bound and head.weight_v.abs().max() > 0.9 * bound
    assert not head.weight_g.requires_grad and head.weight_v.requires_grad
    assert DinoHead(8, 10, norm_last_layer=False).weight_g.requires_grad


def test_dino_head_output_is_weight_normalised_projection():
    torch.manual_seed(0)
    head = DinoHead(8, 10, hidden_dim=16, bottleneck_dim=4).eval()
    x = torch.randn(5, 8)
    bottleneck = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    direction = head.weight_v / head.weight_v.norm(dim=1, keepdim=True)
    torch.testing.assert_close(head(x), bottleneck @ direction.T)


def test_norm_last_layer_keeps_unit_row_norms_after_an_optimizer_step():
    torch.manual_seed(0)
    head = DinoHead(8, 10, hidden_dim=16, bottleneck_dim=4)
    optimizer = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=0.1, weight_decay=0.5)
    v_before = head.weight_v.detach().clone()
    head(torch.randn(6, 8)).pow(2).sum().backward()
    optimizer.step()
    assert not torch.equal(head.weight_v, v_before)  # the directions are trained
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(10))
    assert torch.equal(head.weight_g, torch.ones(10, 1))


def test_weight_g_is_trained_without_norm_last_layer():
    torch.manual_seed(0)
    head = DinoHead(8, 10, hidden_dim=16, bottleneck_dim=4, norm_last_layer=False)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    head(torch.randn(6, 8)).pow(2).sum().backward()
    optimizer.step()
    assert not torch.equal(head.weight_g, torch.ones(10, 1))


# ---------------------------------------------------------------- config


def test_config_validation(tiny_vit_config):
    for field, value in [("head_out_dim", 0), ("teacher_temp", 0.0), ("momentum_teacher", 1.5),
                         ("warmup_teacher_temp_epochs", -1), ("freeze_last_layer_epochs", -1)]:
        with pytest.raises(ValueError, match=field):
            DinoConfig(backbone_config=tiny_vit_config.to_dict(), **{field: value})


def test_auto_classes_build_the_pretraining_model(tiny_vit_config):
    config = AutoConfig.for_model("dino", backbone_config=tiny_vit_config.to_dict(), **HEAD)
    assert type(AutoModelForPreTraining.from_config(config)) is DinoForPreTraining


# ---------------------------------------------------------------- pretraining model


def test_initial_state(dino_config):
    model = DinoForPreTraining(dino_config)
    assert isinstance(model.dino, DinoModel)
    for teacher, student in [(model.dino, model.student), (model.teacher_head, model.student_head)]:
        for (name, t), (_, s) in zip(teacher.named_parameters(), student.named_parameters()):
            assert torch.equal(t, s), name
            assert not t.requires_grad
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("student") for name in trainable)
    assert "student_head.last_layer.parametrizations.weight.original0" not in trainable  # norm_last_layer
    assert torch.count_nonzero(model.center) == 0
    assert model.teacher_temperature.item() == pytest.approx(dino_config.warmup_teacher_temp)


def test_forward_multi_crop(dino_config):
    torch.manual_seed(0)
    model = DinoForPreTraining(dino_config).train()
    out = model(**views(), labels=torch.zeros(3, dtype=torch.long))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert set(out.logs) == {"loss", "teacher_temp", "momentum", "teacher_entropy", "teacher_student_kl"}
    assert all(not value.requires_grad for value in out.logs.values())
    assert out.logs["momentum"].item() == pytest.approx(dino_config.momentum_teacher)
    # embeddings: the student's pooled features of global view 0
    with torch.no_grad():
        expected = model.student(views()["global_views"][0]).pooler_output
    torch.testing.assert_close(out.embeddings, expected, rtol=1e-4, atol=1e-5)
    # KL(teacher || student) >= 0 and the loss is cross-entropy = entropy + KL
    assert out.logs["teacher_student_kl"] >= 0
    out.loss.backward()
    assert all(p.grad is None for p in model.dino.parameters())
    assert model.student.backbone.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0


def test_forward_without_local_views_and_bad_shapes(dino_config):
    model = DinoForPreTraining(dino_config)
    assert torch.isfinite(model(global_views=views()["global_views"]).loss)
    with pytest.raises(ValueError, match="views, batch"):
        model(global_views=torch.randn(3, 3, 32, 32))


def test_loss_equals_lightly_dino_loss_on_the_model_outputs(dino_config):
    torch.manual_seed(0)
    model = DinoForPreTraining(dino_config).train()
    perturb_(model.dino)
    model.center.normal_()
    batch = views()
    with torch.no_grad():
        teacher = model.teacher_head(model.dino(batch["global_views"].flatten(0, 1)).pooler_output).view(2, 3, -1)
        student = torch.cat([model.student(batch[k].flatten(0, 1)).pooler_output for k in batch])
        student = model.student_head(student).view(6, 3, -1)
    reference = DINOLoss(output_dim=64, student_temp=dino_config.student_temp, warmup_teacher_temp_epochs=0)
    reference.center.copy_(model.center.view(1, 1, -1))
    expected = reference(list(teacher), list(student), teacher_temp=dino_config.warmup_teacher_temp)
    out = model(**batch)
    torch.testing.assert_close(out.loss, expected, rtol=1e-4, atol=1e-5)
    # ... and the centre moved as lightly's did (momentum 0.9 towards the mean teacher output)
    torch.testing.assert_close(model.center, reference.center.view(1, -1), rtol=1e-4, atol=1e-6)


def test_center_is_not_updated_in_eval_mode(dino_config):
    model = DinoForPreTraining(dino_config).eval()
    model(**views())
    assert torch.count_nonzero(model.center) == 0


def test_training_steps_with_hooks_lower_the_loss_against_fixed_targets(tiny_vit_config):
    """With the teacher and the centre held fixed (momenta 1), the student must fit the targets."""
    config = DinoConfig(
        backbone_config=tiny_vit_config.to_dict(), momentum_teacher=1.0, center_momentum=1.0, **HEAD
    )
    torch.manual_seed(0)
    model = DinoForPreTraining(config).train()
    teacher_before = [p.clone() for p in model.dino.parameters()]
    losses = train_losses(model, views(), 6, lr=1e-4, steps_per_epoch=2)
    assert losses[-1] < 0.9 * losses[0], losses
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, model.dino.parameters()))


def test_training_steps_with_hooks_lower_the_teacher_student_kl(dino_config):
    """With the default schedules the targets move (EMA teacher; centring raises the teacher entropy, which is
    part of the cross-entropy), so what the student must lower is its KL to the teacher."""
    torch.manual_seed(0)
    model = DinoForPreTraining(dino_config).train()
    logs = train_steps(model, views(), 6, lr=1e-4, steps_per_epoch=2)
    assert logs[-1]["teacher_student_kl"] < 0.6 * logs[0]["teacher_student_kl"], logs
    for log in logs:
        assert log["loss"] == pytest.approx(log["teacher_entropy"] + log["teacher_student_kl"], rel=1e-5)


def test_on_step_end_moves_the_teacher_towards_the_student(dino_config):
    torch.manual_seed(0)
    model = DinoForPreTraining(dino_config)
    perturb_(model.student)
    perturb_(model.student_head)
    teacher_before = [p.clone() for p in [*model.dino.parameters(), *model.teacher_head.parameters()]]
    student = [*model.student.parameters(), *model.student_head.parameters()]
    progress = TrainingProgress(step=5, total_steps=10, steps_per_epoch=2)
    model.on_step_end(progress)
    momentum = 0.996 + (1 - 0.996) / 2  # cosine schedule half-way
    teacher_after = [*model.dino.parameters(), *model.teacher_head.parameters()]
    for before, after, s in zip(teacher_before, teacher_after, student):
        torch.testing.assert_close(after, momentum * before + (1 - momentum) * s)
    distance = lambda ts: sum((t - s).norm() for t, s in zip(ts, student))  # noqa: E731
    assert distance(teacher_after) < distance(teacher_before)
    # the next step's momentum is logged
    assert model.teacher_momentum.item() == pytest.approx(model.momentum_at_step(6, 10))


def test_last_layer_is_frozen_during_the_first_epoch(dino_config):
    torch.manual_seed(0)
    model = DinoForPreTraining(dino_config).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = views()
    for step, frozen in [(0, True), (3, True), (4, False)]:
        progress = TrainingProgress(step=step, total_steps=8, steps_per_epoch=4)
        v_before = model.student_head.weight_v.detach().clone()
        mlp_before = model.student_head.mlp.layers[0].weight.detach().clone()
        optimizer.zero_grad()
        model(**batch).loss.backward()
        model.on_before_optimizer_step(progress)
        optimizer.step()
        assert (model.student_head.weight_v.grad is None) == frozen
        assert torch.equal(model.student_head.weight_v, v_before) == frozen
        assert not torch.equal(model.student_head.mlp.layers[0].weight, mlp_before)


def test_teacher_temperature_warm_up_per_epoch(tiny_vit_config):
    config = DinoConfig(
        backbone_config=tiny_vit_config.to_dict(), warmup_teacher_temp=0.04, teacher_temp=0.07,
        warmup_teacher_temp_epochs=3, **HEAD,
    )
    model = DinoForPreTraining(config)
    # np.linspace(0.04, 0.07, 3) per epoch, then constant
    assert [model.teacher_temp_at_epoch(e) for e in range(5)] == pytest.approx([0.04, 0.055, 0.07, 0.07, 0.07])
    seen = []
    for step in range(8):  # 2 steps per epoch
        seen.append(model(**views()).logs["teacher_temp"].item())
        model.on_step_end(TrainingProgress(step=step, total_steps=8, steps_per_epoch=2))
    assert seen == pytest.approx([0.04, 0.04, 0.055, 0.055, 0.07, 0.07, 0.07, 0.07])


def test_save_load_round_trip_and_automodel_loads_the_teacher(dino_config, tmp_path):
    torch.manual_seed(0)
    model = DinoForPreTraining(dino_config)
    perturb_(model.dino)  # teacher != student
    perturb_(model.teacher_head)
    model.center.normal_()
    model.teacher_temperature.fill_(0.05)
    model.save_pretrained(tmp_path)

    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert type(reloaded) is DinoForPreTraining
    original_state, reloaded_state = model.state_dict(), reloaded.state_dict()
    assert original_state.keys() == reloaded_state.keys()
    for key, value in original_state.items():
        assert torch.equal(value, reloaded_state[key]), key
    # transformers loads every float parameter as trainable; the teacher and g must stay frozen
    assert {n for n, p in reloaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }

    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is DinoModel
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = encoder(pixels).pooler_output
        torch.testing.assert_close(features, model.eval().dino(pixels).pooler_output)
        assert not torch.allclose(features, model.student(pixels).pooler_output, atol=1e-3)


def test_original_weight_norm_keys_load_into_the_head(dino_config, tmp_path):
    """The original checkpoints name g and v `last_layer.weight_g` / `weight_v`; transformers maps them onto the
    parametrization, so a converted checkpoint can keep them."""
    model = DinoForPreTraining(dino_config)
    perturb_(model.teacher_head)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    renamed = {
        key.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                              "weight_v"): value
        for key, value in state.items()
    }
    assert "teacher_head.last_layer.weight_v" in renamed
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    reloaded = DinoForPreTraining.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.teacher_head.weight_v, model.teacher_head.weight_v)


def test_resnet_backbone(tmp_path):
    config = DinoConfig(
        backbone_config=SSLResNetConfig(depth=18, cifar_stem=True).to_dict(), head_use_bn=True,
        norm_last_layer=False, **HEAD,
    )
    torch.manual_seed(0)
    model = DinoForPreTraining(config).train()
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.student_head.modules())
    batch = dict(global_views=torch.randn(2, 2, 3, 16, 16), local_views=torch.randn(2, 2, 3, 8, 8))
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.embeddings.shape == (2, 512)
    out.loss.backward()
    model.on_before_optimizer_step(TrainingProgress(step=0, total_steps=2, steps_per_epoch=1))
    model.on_step_end(TrainingProgress(step=0, total_steps=2, steps_per_epoch=1))
    model.save_pretrained(tmp_path)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels).pooler_output, model.eval().dino(pixels).pooler_output)


def test_pretraining_model_from_a_feature_checkpoint_initialises_what_is_missing(dino_config, tmp_path):
    """Continuing pretraining from a `DinoModel` checkpoint: the encoder is loaded into the teacher, the heads and
    the method buffers get their original initialisation."""
    torch.manual_seed(0)
    encoder = DinoModel(dino_config)
    encoder.save_pretrained(tmp_path)
    model = DinoForPreTraining.from_pretrained(tmp_path)
    for (name, loaded), saved in zip(model.dino.state_dict().items(), encoder.state_dict().values()):
        assert torch.equal(loaded, saved), name
    assert torch.count_nonzero(model.center) == 0
    assert model.teacher_temperature.item() == pytest.approx(dino_config.warmup_teacher_temp)
    for head in (model.student_head, model.teacher_head):
        assert torch.equal(head.weight_g, torch.ones_like(head.weight_g))
        assert torch.count_nonzero(head.mlp.layers[0].bias) == 0
        assert head.mlp.layers[2].weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert not any(p.requires_grad for p in model.dino.parameters())


def test_head_init_inside_the_model(dino_config):
    torch.manual_seed(0)
    head = DinoForPreTraining(dino_config).student_head
    assert head.mlp.layers[2].weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.count_nonzero(head.mlp.layers[2].bias) == 0
    bound = 1 / head.weight_v.shape[1] ** 0.5
    assert head.weight_v.abs().max() <= bound and head.weight_v.abs().max() > 0.9 * bound
    assert torch.equal(head.weight_g, torch.ones_like(head.weight_g))
