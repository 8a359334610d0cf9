"""BYOL: the normalized-MSE loss, the EMA target and its schedule, and what `AutoModel` loads."""

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from hf_ssl import BYOLConfig, BYOLForPreTraining, BYOLModel, SSLResNetConfig
from hf_ssl.modeling.losses import byol_loss, normalized_mse
from hf_ssl.training.progress import TrainingProgress

from helpers import train_losses

HEAD = dict(projection_hidden_dim=64, projection_dim=16, prediction_hidden_dim=64)


@pytest.fixture
def byol_config(tiny_vit_config):
    return BYOLConfig(backbone_config=tiny_vit_config.to_dict(), **HEAD)


def two_views(batch=4, size=32, seed=0):
    return torch.randn(2, batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- loss


def test_normalized_mse_hand_computed():
    p = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    z = torch.tensor([[3.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
    # same direction: 0; opposite: 4; orthogonal: 2 (the squared distance of the unit vectors)
    assert normalized_mse(p, z).item() == pytest.approx((0 + 4 + 2) / 3)
    unit_p, unit_z = F.normalize(p, dim=1), F.normalize(z, dim=1)
    assert normalized_mse(p, z).item() == pytest.approx(((unit_p - unit_z) ** 2).sum(1).mean().item())


def test_byol_loss_is_symmetrized_and_matches_lightly_negative_cosine():
    generator = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(6, 8, generator=generator) for _ in range(4))
    cosine = NegativeCosineSimilarity()
    expected = (2 + 2 * cosine(p1, z2)) + (2 + 2 * cosine(p2, z1))
    torch.testing.assert_close(byol_loss(p1, p2, z1, z2), expected)
    assert byol_loss(p1, p2, p2, p1).item() == pytest.approx(0.0, abs=1e-6)  # perfect predictions
    assert byol_loss(p1, p2, -p2, -p1).item() == pytest.approx(8.0)


def test_byol_loss_gradient_reaches_only_the_predictions():
    generator = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(3, 4, generator=generator, requires_grad=True) for _ in range(4))
    byol_loss(p1, p2, z1, z2).backward()
    assert p1.grad is not None and p2.grad is not None and z1.grad is None and z2.grad is None
    with pytest.raises(ValueError, match="one shape"):
        normalized_mse(torch.randn(3, 4), torch.randn(3, 5))


# ---------------------------------------------------------------- model


def test_config_defaults_and_validation(tiny_vit_config):
    config = BYOLConfig()
    assert (config.projection_hidden_dim, config.projection_dim, config.prediction_hidden_dim) == (4096, 256, 4096)
    assert config.momentum == 0.996
    for field, value in [("projection_dim", 0), ("prediction_hidden_dim", 0), ("momentum", 2.0)]:
        with pytest.raises(ValueError, match=field):
            BYOLConfig(backbone_config=tiny_vit_config.to_dict(), **{field: value})


def test_auto_classes_heads_and_initial_target(tiny_vit_config):
    config = AutoConfig.for_model("byol", backbone_config=tiny_vit_config.to_dict(), **HEAD)
    model = AutoModelForPreTraining.from_config(config)
    assert type(model) is BYOLForPreTraining and isinstance(model.byol, BYOLModel)
    for head in (model.projector, model.predictor):  # Linear-BN-ReLU-Linear
        assert [type(m).__name__ for m in head.layers] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    for online, target in zip(model.byol.parameters(), model.target_encoder.parameters()):
        assert torch.equal(online, target) and not target.requires_grad
    assert all(not p.requires_grad for p in model.target_projector.parameters())


def test_forward_is_the_loss_of_the_model_outputs(byol_config):
    torch.manual_seed(0)
    model = BYOLForPreTraining(byol_config).train()
    views = two_views()
    out = model(global_views=views)
    with torch.no_grad():
        z = [model.projector(model.byol(view).pooler_output) for view in views]
        p = [model.predictor(x) for x in z]
        t = [model.target_projector(model.target_encoder(view).pooler_output) for view in views]
    torch.testing.assert_close(out.loss, byol_loss(p[0], p[1], t[0], t[1]))
    assert set(out.logs) == {"loss", "momentum", "online_target_cosine"}
    out.loss.backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    with pytest.raises(ValueError, match="2, batch"):
        model(global_views=torch.randn(1, 2, 3, 32, 32))


def test_on_step_end_moves_the_target_with_the_cosine_rate(byol_config):
    torch.manual_seed(0)
    model = BYOLForPreTraining(byol_config)
    assert model.momentum_at_step(0, 10) == pytest.approx(0.996)
    assert model.momentum_at_step(5, 10) == pytest.approx(0.998)
    with torch.no_grad():
        for parameter in model.projector.parameters():
            parameter.add_(1.0)
    before = [p.clone() for p in model.target_projector.parameters()]
    model.on_step_end(TrainingProgress(5, 10, 2))
    for old, new, online in zip(before, model.target_projector.parameters(), model.projector.parameters()):
        torch.testing.assert_close(new, 0.998 * old + 0.002 * online)
    assert model.current_momentum.item() == pytest.approx(model.momentum_at_step(6, 10))


def test_training_steps_with_hooks_lower_the_loss(byol_config):
    torch.manual_seed(0)
    model = BYOLForPreTraining(byol_config).train()
    losses = train_losses(model, {"global_views": two_views()}, 6)
    assert losses[-1] < 0.7 * losses[0], losses


def test_save_load_round_trip_and_automodel_loads_the_online_encoder(byol_config, tmp_path):
    torch.manual_seed(0)
    model = BYOLForPreTraining(byol_config)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    assert all(not p.requires_grad for p in reloaded.target_encoder.parameters())
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is BYOLModel
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels).pooler_output, model.eval().byol(pixels).pooler_output)


def test_resnet_backbone():
    config = BYOLConfig(backbone_config=SSLResNetConfig(depth=18, cifar_stem=True).to_dict(), **HEAD)
    torch.manual_seed(0)
    model = BYOLForPreTraining(config).train()
    out = model(global_views=two_views(batch=3, size=16))
    assert torch.isfinite(out.loss) and out.embeddings.shape == (3, 16)
    out.loss.backward()


@pytest.mark.parametrize("recipe", ["byol_resnet50", "byol_tiny_fmnist"])
def test_recipes_give_a_valid_config_and_views(recipe):
    from hf_ssl.processing.views import build_views
    from hf_ssl.training.recipe import load_recipe

    loaded = load_recipe(recipe, [])
    config = AutoConfig.for_model(**loaded.model)
    assert config.model_type == "byol"
    assert build_views(**loaded.views)(torch.zeros(1, 28, 28, dtype=torch.uint8))["global_views"][0].ndim == 3
