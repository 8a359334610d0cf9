"""SimSiam: the negative-cosine loss with stop-gradient, the heads and what `AutoModel` loads."""

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from hf_ssl import SimSiamConfig, SimSiamForPreTraining, SimSiamModel, SSLResNetConfig
from hf_ssl.modeling.losses import negative_cosine_similarity, simsiam_loss

from helpers import train_losses

HEAD = dict(projection_hidden_dim=64, projection_dim=32, prediction_hidden_dim=8)


@pytest.fixture
def simsiam_config(tiny_vit_config):
    return SimSiamConfig(backbone_config=tiny_vit_config.to_dict(), **HEAD)


def two_views(batch=4, size=32, seed=0):
    return torch.randn(2, batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- loss


def test_negative_cosine_hand_computed():
    p = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    z = torch.tensor([[3.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    expected = -(1.0 + (-1 / 2**0.5) + 0.0) / 3
    assert negative_cosine_similarity(p, z).item() == pytest.approx(expected)
    assert simsiam_loss(p, p, p, p).item() == pytest.approx(-1.0)  # identical outputs: the minimum


def test_simsiam_loss_matches_lightly_and_stops_the_gradient_of_z():
    generator = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(6, 8, generator=generator, requires_grad=True) for _ in range(4))
    cosine = NegativeCosineSimilarity()
    expected = 0.5 * cosine(p1, z2.detach()) + 0.5 * cosine(p2, z1.detach())
    loss = simsiam_loss(p1, p2, z1, z2)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert p1.grad is not None and p2.grad is not None and z1.grad is None and z2.grad is None
    with pytest.raises(ValueError, match="one shape"):
        negative_cosine_similarity(torch.randn(3, 4), torch.randn(2, 4))


# ---------------------------------------------------------------- model


def test_config_defaults_and_validation(tiny_vit_config):
    config = SimSiamConfig()
    assert (config.projection_hidden_dim, config.projection_dim, config.projection_num_layers) == (2048, 2048, 3)
    assert config.prediction_hidden_dim == 512
    for field in ("projection_dim", "projection_num_layers", "prediction_hidden_dim"):
        with pytest.raises(ValueError, match=field):
            SimSiamConfig(backbone_config=tiny_vit_config.to_dict(), **{field: 0})


def test_heads_are_the_papers(tiny_vit_config):
    config = AutoConfig.for_model("simsiam", backbone_config=tiny_vit_config.to_dict(), **HEAD)
    model = AutoModelForPreTraining.from_config(config)
    assert type(model) is SimSiamForPreTraining and isinstance(model.simsiam, SimSiamModel)
    # projector: BN on the hidden layers and on the output (without affine parameters); predictor: a bottleneck
    # with BN on its hidden layer only (the paper's table of BN ablations, case "default")
    projector = model.projector.layers
    assert [type(m).__name__ for m in projector] == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "BatchNorm1d"]
    assert not projector[-1].affine
    assert [type(m).__name__ for m in model.predictor.layers] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert model.predictor.layers[0].out_features == 8 and model.predictor.layers[-1].out_features == 32


def test_forward_is_the_loss_of_the_model_outputs_and_z_gets_no_gradient(simsiam_config):
    torch.manual_seed(0)
    model = SimSiamForPreTraining(simsiam_config).train()
    views = two_views()
    out = model(global_views=views)
    with torch.no_grad():
        z = [model.projector(model.simsiam(view).pooler_output) for view in views]
        p = [model.predictor(x) for x in z]
    torch.testing.assert_close(out.loss, simsiam_loss(p[0], p[1], z[0], z[1]))
    assert set(out.logs) == {"loss", "z_std"} and -1.0 <= out.loss.item() <= 1.0
    out.loss.backward()
    # the projector learns through the predictor branch (the z branch is stopped)
    assert model.projector.layers[0].weight.grad is not None
    with pytest.raises(ValueError, match="2, batch"):
        model(global_views=torch.randn(2, 4, 3, 32))


def test_training_steps_lower_the_loss(simsiam_config):
    torch.manual_seed(0)
    model = SimSiamForPreTraining(simsiam_config).train()
    losses = train_losses(model, {"global_views": two_views(batch=8)}, 6, hooks=False)
    assert losses[-1] < losses[0] - 0.1 and losses[-1] == min(losses), losses


def test_automodel_loads_the_backbone(simsiam_config, tmp_path):
    torch.manual_seed(0)
    model = SimSiamForPreTraining(simsiam_config)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is SimSiamModel
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels).pooler_output, model.eval().simsiam(pixels).pooler_output)


def test_resnet_backbone():
    config = SimSiamConfig(backbone_config=SSLResNetConfig(depth=18, cifar_stem=True).to_dict(), **HEAD)
    torch.manual_seed(0)
    model = SimSiamForPreTraining(config).train()
    out = model(global_views=two_views(batch=3, size=16))
    assert torch.isfinite(out.loss) and out.embeddings.shape == (3, 32)
    out.loss.backward()


@pytest.mark.parametrize("recipe", ["simsiam_resnet50", "simsiam_tiny_fmnist"])
def test_recipes_give_a_valid_config_and_views(recipe):
    from hf_ssl.processing.views import build_views
    from hf_ssl.training.recipe import load_recipe

    loaded = load_recipe(recipe, [])
    config = AutoConfig.for_model(**loaded.model)
    assert config.model_type == "simsiam"
    assert build_views(**loaded.views)(torch.zeros(1, 28, 28, dtype=torch.uint8))["global_views"][0].ndim == 3
