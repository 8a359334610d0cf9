"""MoCo v3: the symmetrized contrastive loss, the momentum encoder and its schedule, the random patch projection and
what `AutoModel` loads."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from hf_ssl import MoCoV3Config, MoCoV3ForPreTraining, MoCoV3Model, SSLResNetConfig
from hf_ssl.modeling.losses import info_nce_loss, mocov3_loss
from hf_ssl.training.progress import TrainingProgress

from helpers import train_losses

HEAD = dict(projection_hidden_dim=64, projection_dim=16, prediction_hidden_dim=64)


@pytest.fixture
def mocov3_config(tiny_vit_config):
    return MoCoV3Config(backbone_config=tiny_vit_config.to_dict(), **HEAD)


def two_views(batch=4, size=32, seed=0):
    return torch.randn(2, batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- loss


def test_info_nce_hand_computed():
    queries = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    keys = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    t = 0.5
    c = 1 / math.sqrt(2)
    # query 0: cos with keys (c, 0), positive key 0; query 1: cos (c, 1), positive key 1
    first = -math.log(math.exp(c / t) / (math.exp(c / t) + math.exp(0.0)))
    second = -math.log(math.exp(1 / t) / (math.exp(c / t) + math.exp(1 / t)))
    assert info_nce_loss(queries, keys, t).item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_mocov3_loss_is_two_tau_times_the_two_directions_and_keys_get_no_gradient():
    generator = torch.Generator().manual_seed(0)
    q1, q2, k1, k2 = (torch.randn(5, 8, generator=generator, requires_grad=True) for _ in range(4))
    loss = mocov3_loss(q1, q2, k1, k2, temperature=0.2)
    # the original's ctr(q, k) = CrossEntropy(normalize(q) @ normalize(k).T / T, arange(N)) * 2T
    def ctr(q, k):
        return F.cross_entropy(F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.2, torch.arange(5)) * 2 * 0.2

    torch.testing.assert_close(loss, ctr(q1, k2) + ctr(q2, k1))
    loss.backward()
    assert q1.grad is not None and q2.grad is not None and k1.grad is None and k2.grad is None


def test_info_nce_invariances():
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(6, 8, generator=generator), torch.randn(6, 8, generator=generator)
    loss = info_nce_loss(q, k, 0.2)
    order = torch.randperm(6, generator=generator)
    torch.testing.assert_close(info_nce_loss(q[order], k[order], 0.2), loss)  # same pairs, another order
    torch.testing.assert_close(info_nce_loss(3 * q, 0.5 * k, 0.2), loss)  # cosine similarity: scale-free
    # identical unit-separated pairs: the loss falls towards 0 as tau does
    eye = torch.eye(4)
    assert info_nce_loss(eye, eye, 0.01).item() < 1e-6
    with pytest.raises(ValueError, match="one shape"):
        info_nce_loss(q, k[:3], 0.2)
    with pytest.raises(ValueError, match="temperature"):
        info_nce_loss(q, k, -1.0)


# ---------------------------------------------------------------- model


def test_config_defaults_and_validation(tiny_vit_config):
    config = MoCoV3Config()
    assert (config.projection_hidden_dim, config.projection_dim, config.projection_num_layers) == (4096, 256, 3)
    assert (config.prediction_hidden_dim, config.prediction_num_layers) == (4096, 2)
    assert (config.temperature, config.momentum, config.momentum_cosine) == (0.2, 0.99, True)
    for field, value in [("projection_dim", 0), ("temperature", 0.0), ("momentum", -0.1)]:
        with pytest.raises(ValueError, match=field):
            MoCoV3Config(backbone_config=tiny_vit_config.to_dict(), **{field: value})
    with pytest.raises(ValueError, match="stop_grad_conv1"):
        MoCoV3Config(backbone_config=SSLResNetConfig(depth=18).to_dict(), stop_grad_conv1=True)


def test_heads_are_the_originals(tiny_vit_config):
    config = AutoConfig.for_model("mocov3", backbone_config=tiny_vit_config.to_dict(), **HEAD)
    model = AutoModelForPreTraining.from_config(config)
    assert type(model) is MoCoV3ForPreTraining and isinstance(model.mocov3, MoCoV3Model)
    # _build_mlp(3, ..., last_bn=True): no biases, BN after every layer, the last one without affine parameters
    layers = model.projector.layers
    assert [type(m).__name__ for m in layers] == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "BatchNorm1d"]
    assert all(m.bias is None for m in layers if isinstance(m, torch.nn.Linear)) and not layers[-1].affine
    # _build_mlp(2, ..., last_bn=False)
    assert [type(m).__name__ for m in model.predictor.layers] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    for online, key in zip(model.mocov3.parameters(), model.momentum_encoder.parameters()):
        assert torch.equal(online, key) and not key.requires_grad


def test_forward_is_the_symmetrized_loss_of_the_model_outputs(mocov3_config):
    torch.manual_seed(0)
    model = MoCoV3ForPreTraining(mocov3_config).train()
    views = two_views()
    out = model(global_views=views)
    with torch.no_grad():  # training-mode BatchNorm, one pass per view: the same outputs again
        z = [model.projector(model.mocov3(view).pooler_output) for view in views]
        q = [model.predictor(x) for x in z]
        k = [model.momentum_projector(model.momentum_encoder(view).pooler_output) for view in views]
    torch.testing.assert_close(out.loss, mocov3_loss(q[0], q[1], k[0], k[1], 0.2))
    torch.testing.assert_close(out.embeddings, z[0])
    assert set(out.logs) == {"loss", "momentum", "positive_cosine"}
    out.loss.backward()
    assert all(p.grad is None for p in model.momentum_encoder.parameters())
    assert model.predictor.layers[0].weight.grad is not None
    with pytest.raises(ValueError, match="2, batch"):
        model(global_views=torch.randn(2, 3, 32, 32))


def test_momentum_follows_a_cosine_from_base_to_one(mocov3_config):
    torch.manual_seed(0)
    model = MoCoV3ForPreTraining(mocov3_config)
    assert model.momentum_at_step(0, 100) == pytest.approx(0.99)
    assert model.momentum_at_step(50, 100) == pytest.approx(0.995)
    assert model.momentum_at_step(100, 100) == pytest.approx(1.0)
    with torch.no_grad():
        for parameter in model.mocov3.parameters():
            parameter.add_(1.0)
    before = [p.clone() for p in model.momentum_encoder.parameters()]
    model.on_step_end(TrainingProgress(50, 100, 10))
    for old, new, online in zip(before, model.momentum_encoder.parameters(), model.mocov3.parameters()):
        torch.testing.assert_close(new, 0.995 * old + 0.005 * online)
    assert model.current_momentum.item() == pytest.approx(model.momentum_at_step(51, 100))
    constant = MoCoV3ForPreTraining(MoCoV3Config(**{**mocov3_config.to_dict(), "momentum_cosine": False}))
    assert constant.momentum_at_step(50, 100) == 0.99


def test_stop_grad_conv1_keeps_the_random_patch_projection(tiny_vit_config):
    config = MoCoV3Config(backbone_config=tiny_vit_config.to_dict(), stop_grad_conv1=True, **HEAD)
    torch.manual_seed(0)
    model = MoCoV3ForPreTraining(config).train()
    projection = model.mocov3.backbone.embeddings.patch_embeddings.projection
    initial = projection.weight.clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(global_views=two_views()).loss.backward()
    optimizer.step()
    model.on_step_end(TrainingProgress(0, 10, 5))
    assert projection.weight.grad is None and torch.equal(projection.weight, initial)
    assert model.mocov3.backbone.layernorm.weight.grad is not None


def test_training_steps_with_hooks_lower_the_loss(mocov3_config):
    torch.manual_seed(0)
    model = MoCoV3ForPreTraining(mocov3_config).train()
    losses = train_losses(model, {"global_views": two_views()}, 6)
    assert losses[-1] < 0.6 * losses[0], losses


def test_save_load_round_trip_and_automodel_loads_the_query_encoder(mocov3_config, tmp_path):
    config = MoCoV3Config(**{**mocov3_config.to_dict(), "stop_grad_conv1": True})
    torch.manual_seed(0)
    model = MoCoV3ForPreTraining(config)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name, p in reloaded.named_parameters() if p.requires_grad}
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is MoCoV3Model
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels).pooler_output, model.eval().mocov3(pixels).pooler_output)


def test_resnet_backbone():
    config = MoCoV3Config(
        backbone_config=SSLResNetConfig(depth=18, cifar_stem=True).to_dict(), projection_num_layers=2,
        temperature=1.0, **HEAD,
    )
    torch.manual_seed(0)
    model = MoCoV3ForPreTraining(config).train()
    out = model(global_views=two_views(batch=3, size=16))
    assert torch.isfinite(out.loss) and out.embeddings.shape == (3, 16)
    out.loss.backward()


def test_original_checkpoint_converters_wrap_into_the_method_models():
    from hf_ssl import BYOLModel, MoCoModel, SimSiamModel
    from hf_ssl.convert.originals import get_converter, resolve_model_class

    for method, model_class in [("mocov3", MoCoV3Model), ("moco", MoCoModel), ("simsiam", SimSiamModel),
                                ("byol", BYOLModel)]:  # fmt: skip
        assert resolve_model_class(get_converter(method).model_types) is model_class


@pytest.mark.parametrize("recipe", ["mocov3_vits16", "mocov3_tiny_fmnist"])
def test_recipes_give_a_valid_config_and_views(recipe):
    from hf_ssl.processing.views import build_views
    from hf_ssl.training.recipe import load_recipe

    loaded = load_recipe(recipe, [])
    config = AutoConfig.for_model(**loaded.model)
    assert config.model_type == "mocov3"
    assert build_views(**loaded.views)(torch.zeros(1, 28, 28, dtype=torch.uint8))["global_views"][0].ndim == 3
