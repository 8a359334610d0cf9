"""SimCLR: the projector, the pretraining model and what `AutoModel` loads from its checkpoints."""

import pytest
import torch
from lightly.loss import NTXentLoss
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from hf_ssl import SSLResNetConfig, SimCLRConfig, SimCLRForPreTraining, SimCLRModel
from hf_ssl.modeling.heads import ProjectionMLP

from helpers import train_losses

PROJECTOR = dict(projection_hidden_dim=64, projection_dim=16)


@pytest.fixture
def simclr_config(tiny_vit_config):
    return SimCLRConfig(backbone_config=tiny_vit_config.to_dict(), temperature=0.5, **PROJECTOR)


def two_views(batch=4, size=32, seed=0):
    return torch.randn(2, batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_projection_mlp_layouts():
    v1 = ProjectionMLP(32, 64, 16, num_layers=2, use_bn=True, bias=False)
    assert [type(m) for m in v1.layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    v2 = ProjectionMLP(32, 64, 16, num_layers=3, use_bn=True, last_bn=True, last_bn_affine=False)
    assert [type(m) for m in v2.layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear, nn.BatchNorm1d]
    assert not v2.layers[-1].affine
    assert [m.out_features for m in v2.layers if isinstance(m, nn.Linear)] == [64, 64, 16]
    linear = ProjectionMLP(32, 64, 16, num_layers=1, activation="gelu")
    assert [type(m) for m in linear.layers] == [nn.Linear]
    with pytest.raises(ValueError, match="num_layers"):
        ProjectionMLP(32, 64, 16, num_layers=0)
    with pytest.raises(ValueError, match="activation"):
        ProjectionMLP(32, 64, 16, activation="tanh")


def test_projection_mlp_init_is_pytorch_default_even_inside_a_transformers_model(simclr_config):
    model = SimCLRForPreTraining(simclr_config)
    first = model.projector.layers[0]
    bound = 1 / first.in_features**0.5  # kaiming_uniform(a=sqrt(5)) = uniform(-1/sqrt(in), 1/sqrt(in))
    assert first.weight.abs().max() <= bound and first.weight.abs().max() > 0.9 * bound
    assert first.bias is None  # no bias before a BatchNorm


def test_config_defaults_and_validation(tiny_vit_config):
    config = SimCLRConfig()
    assert (config.projection_hidden_dim, config.projection_dim, config.projection_num_layers) == (2048, 128, 2)
    assert config.temperature == 0.1 and config.gather_distributed
    assert config.backbone_config.model_type == "ssl_vit"
    for field, value in [("projection_dim", 0), ("projection_num_layers", 0), ("temperature", 0.0)]:
        with pytest.raises(ValueError, match=field):
            SimCLRConfig(backbone_config=tiny_vit_config.to_dict(), **{field: value})


def test_auto_classes_build_the_pretraining_model(tiny_vit_config):
    config = AutoConfig.for_model("simclr", backbone_config=tiny_vit_config.to_dict(), **PROJECTOR)
    model = AutoModelForPreTraining.from_config(config)
    assert type(model) is SimCLRForPreTraining and isinstance(model.simclr, SimCLRModel)


def test_forward_backward_and_loss_is_nt_xent_of_the_two_views(simclr_config):
    torch.manual_seed(0)
    model = SimCLRForPreTraining(simclr_config).train()
    views = two_views()
    out = model(global_views=views, labels=torch.zeros(4, dtype=torch.long))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert set(out.logs) == {"loss", "positive_cosine"}
    with torch.no_grad():  # same batch, training-mode BatchNorm: the same projections
        z = model.projector(model.simclr(views.flatten(0, 1)).pooler_output)
    torch.testing.assert_close(out.loss, NTXentLoss(temperature=0.5)(z[:4], z[4:]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.embeddings, z[:4])
    out.loss.backward()
    for name, parameter in model.named_parameters():
        if name != "simclr.backbone.embeddings.mask_token":  # only used with masked inputs
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_forward_rejects_other_than_two_views(simclr_config):
    model = SimCLRForPreTraining(simclr_config)
    with pytest.raises(ValueError, match="2, batch"):
        model(global_views=torch.randn(3, 2, 3, 32, 32))


def test_training_steps_lower_the_loss(simclr_config):
    torch.manual_seed(0)
    model = SimCLRForPreTraining(simclr_config).train()
    losses = train_losses(model, {"global_views": two_views()}, 6, hooks=False)
    assert losses[-1] < 0.8 * losses[0], losses


def test_automodel_loads_the_online_encoder(simclr_config, tmp_path):
    torch.manual_seed(0)
    model = SimCLRForPreTraining(simclr_config)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is SimCLRModel
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels).pooler_output, model.eval().simclr(pixels).pooler_output)


def test_resnet_backbone():
    config = SimCLRConfig(
        backbone_config=SSLResNetConfig(depth=18, cifar_stem=True).to_dict(), projection_num_layers=3,
        **PROJECTOR,
    )
    torch.manual_seed(0)
    model = SimCLRForPreTraining(config).train()
    out = model(global_views=two_views(batch=3, size=16))
    assert torch.isfinite(out.loss) and out.embeddings.shape == (3, 16)
    out.loss.backward()
