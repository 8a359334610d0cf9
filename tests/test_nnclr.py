"""NNCLR: nearest neighbours from the support set, the loss, the support-set update and what `AutoModel` loads."""

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.models.modules import NNMemoryBankModule
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from hf_ssl import NNCLRConfig, NNCLRForPreTraining, NNCLRModel, SSLResNetConfig
from hf_ssl.modeling.losses import info_nce_loss, nnclr_loss
from hf_ssl.modeling.memory import FeatureQueue
from hf_ssl.training.progress import TrainingProgress

from helpers import train_losses

HEAD = dict(projection_hidden_dim=64, projection_dim=16, prediction_hidden_dim=64, queue_size=32)


@pytest.fixture
def nnclr_config(tiny_vit_config):
    return NNCLRConfig(backbone_config=tiny_vit_config.to_dict(), **HEAD)


def two_views(batch=4, size=32, seed=0):
    return torch.randn(2, batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- nearest neighbours and loss


def test_nearest_neighbours_hand_picked():
    queue = FeatureQueue(3, 2)
    queue.enqueue(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    queries = torch.tensor([[5.0, 1.0], [-0.2, 3.0], [-1.0, -0.5], [0.1, -0.1]])
    expected = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-(0.5**0.5), -(0.5**0.5)], [1.0, 0.0]])
    torch.testing.assert_close(queue.nearest_neighbours(queries), expected)
    with pytest.raises(ValueError, match="queries"):
        queue.nearest_neighbours(torch.randn(2, 3))


def test_nearest_neighbours_match_lightly():
    torch.manual_seed(0)
    queue = FeatureQueue(50, 8)
    reference = NNMemoryBankModule(size=(50, 8))
    reference.bank = queue.features.clone()
    queries = torch.randn(10, 8)
    torch.testing.assert_close(queue.nearest_neighbours(queries), reference(queries, update=False))


def test_nnclr_loss_hand_computed_and_symmetrized():
    nn1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    p2 = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    t = 0.1
    c = 1 / math.sqrt(2)
    first = -math.log(math.exp(c / t) / (math.exp(c / t) + math.exp(0.0)))
    second = -math.log(math.exp(1 / t) / (math.exp(c / t) + math.exp(1 / t)))
    one_direction = (first + second) / 2
    assert info_nce_loss(nn1, p2, t).item() == pytest.approx(one_direction, rel=1e-6)
    generator = torch.Generator().manual_seed(0)
    nn2, p1 = torch.randn(2, 2, generator=generator), torch.randn(2, 2, generator=generator)
    expected = 0.5 * (one_direction + info_nce_loss(nn2, p1, t).item())
    assert nnclr_loss(nn1, nn2, p1, p2, t).item() == pytest.approx(expected, rel=1e-6)


def test_nnclr_loss_gradient_reaches_only_the_predictions():
    generator = torch.Generator().manual_seed(0)
    nn1, nn2, p1, p2 = (torch.randn(3, 4, generator=generator, requires_grad=True) for _ in range(4))
    nnclr_loss(nn1, nn2, p1, p2, 0.1).backward()
    assert p1.grad is not None and p2.grad is not None and nn1.grad is None and nn2.grad is None


# ---------------------------------------------------------------- model


def test_config_defaults_and_validation(tiny_vit_config):
    config = NNCLRConfig()
    assert (config.projection_hidden_dim, config.projection_dim, config.projection_num_layers) == (2048, 256, 3)
    assert (config.prediction_hidden_dim, config.queue_size, config.temperature) == (4096, 98304, 0.1)
    for field, value in [("queue_size", 0), ("projection_dim", 0), ("temperature", 0.0)]:
        with pytest.raises(ValueError, match=field):
            NNCLRConfig(backbone_config=tiny_vit_config.to_dict(), **{field: value})


def test_forward_contrasts_the_support_set_neighbours_with_the_other_views_predictions(tiny_vit_config):
    config = AutoConfig.for_model("nnclr", backbone_config=tiny_vit_config.to_dict(), **HEAD)
    torch.manual_seed(0)
    model = AutoModelForPreTraining.from_config(config).train()
    assert type(model) is NNCLRForPreTraining and isinstance(model.nnclr, NNCLRModel)
    views = two_views()
    out = model(global_views=views)
    with torch.no_grad():
        z = [model.projector(model.nnclr(view).pooler_output) for view in views]
        p = [model.predictor(x) for x in z]
        nn = [model.support_set.nearest_neighbours(x) for x in z]
    torch.testing.assert_close(out.loss, nnclr_loss(nn[0], nn[1], p[0], p[1], 0.1))
    torch.testing.assert_close(out.embeddings, z[0])
    assert set(out.logs) == {"loss", "nn_cosine"}
    out.loss.backward()
    assert model.projector.layers[0].weight.grad is not None
    with pytest.raises(ValueError, match="2, batch"):
        model(global_views=torch.randn(3, 4, 3, 32, 32))


def test_on_step_end_puts_the_projections_of_view1_into_the_support_set(nnclr_config):
    torch.manual_seed(0)
    model = NNCLRForPreTraining(nnclr_config).train()
    views = two_views()
    model(global_views=views)
    with torch.no_grad():
        z1 = model.projector(model.nnclr(views[0]).pooler_output)
    model.on_step_end(TrainingProgress(0, 10, 5))
    torch.testing.assert_close(model.support_set.features[:4], F.normalize(z1, dim=1))
    assert model.support_set.pointer.item() == 4
    # a projection now in the support set is its own nearest neighbour
    torch.testing.assert_close(model.support_set.nearest_neighbours(z1), F.normalize(z1, dim=1))


def test_training_steps_with_hooks_lower_the_loss(nnclr_config):
    torch.manual_seed(0)
    model = NNCLRForPreTraining(nnclr_config).train()
    losses = train_losses(model, {"global_views": two_views(batch=8)}, 8)
    assert losses[-1] < 0.6 * losses[0], losses


def test_save_load_round_trip_and_automodel_loads_the_encoder(nnclr_config, tmp_path):
    torch.manual_seed(0)
    model = NNCLRForPreTraining(nnclr_config).train()
    model(global_views=two_views())
    model.on_step_end(TrainingProgress(0, 10, 5))
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key  # the support set and its pointer included
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is NNCLRModel
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels).pooler_output, model.eval().nnclr(pixels).pooler_output)


def test_resnet_backbone():
    config = NNCLRConfig(backbone_config=SSLResNetConfig(depth=18, cifar_stem=True).to_dict(), **HEAD)
    torch.manual_seed(0)
    model = NNCLRForPreTraining(config).train()
    out = model(global_views=two_views(batch=3, size=16))
    assert torch.isfinite(out.loss) and out.embeddings.shape == (3, 16)
    out.loss.backward()


@pytest.mark.parametrize("recipe", ["nnclr_resnet50", "nnclr_tiny_fmnist"])
def test_recipes_give_a_valid_config_and_views(recipe):
    from hf_ssl.processing.views import build_views
    from hf_ssl.training.recipe import load_recipe

    loaded = load_recipe(recipe, [])
    config = AutoConfig.for_model(**loaded.model)
    assert config.model_type == "nnclr"
    assert build_views(**loaded.views)(torch.zeros(1, 28, 28, dtype=torch.uint8))["global_views"][0].ndim == 3
