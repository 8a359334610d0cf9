"""Barlow Twins: the loss (hand values, invariances, lightly), the pretraining model and what `AutoModel` loads."""

import pytest
import torch
from lightly.loss import BarlowTwinsLoss
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from hf_ssl import BarlowTwinsConfig, BarlowTwinsForPreTraining, BarlowTwinsModel
from hf_ssl.modeling.losses import barlow_twins_loss

from helpers import train_losses

PROJECTOR = dict(projection_hidden_dim=64, projection_dim=32)


@pytest.fixture
def config(tiny_vit_config):
    return BarlowTwinsConfig(backbone_config=tiny_vit_config.to_dict(), **PROJECTOR)


def two_views(batch=8, size=32, seed=0):
    return torch.randn(2, batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def decorrelated(num_samples, dim, seed=0):
    """Embeddings whose columns have zero mean, unit (biased) variance and no correlation: sqrt(N) Q for Q with
    orthonormal columns orthogonal to the all-ones vector."""
    x = torch.randn(num_samples, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(dim=0))
    return (q * num_samples**0.5).float()


def test_loss_hand_computed():
    # z_a standardised: [[-1, 1], [1, -1]]; z_b (means 1, 2; stds 1, 2): [[-1, -1], [1, 1]].
    # C = z_a^T z_b / 2 = [[1, 1], [-1, -1]]: on-diagonal (1 - 1)^2 + (1 + 1)^2 = 4, off-diagonal 1 + 1 = 2.
    z_a = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    z_b = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    assert barlow_twins_loss(z_a, z_b, lambd=0.5, eps=0.0).item() == pytest.approx(4 + 0.5 * 2, rel=1e-6)


def test_identical_decorrelated_embeddings_give_zero_loss():
    z = decorrelated(64, 16)
    torch.testing.assert_close(z.T @ z / 64, torch.eye(16), atol=1e-5, rtol=0)
    assert barlow_twins_loss(z, z.clone()).item() < 1e-6
    # dimension 0 replaced by z0 + z1: correlation 1/sqrt(2) with dimension 1, so the off-diagonal sum is 2 x 1/2
    mixed = z.clone()
    mixed[:, 0] += z[:, 1]
    assert barlow_twins_loss(mixed, mixed, lambd=0.3).item() == pytest.approx(0.3, rel=1e-4)


def test_loss_is_invariant_to_per_dimension_affine_maps():
    # batch-standardisation removes any positive scale and shift of each dimension
    generator = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(32, 8, generator=generator), torch.randn(32, 8, generator=generator)
    scale, shift = torch.rand(8, generator=generator) + 0.5, torch.randn(8, generator=generator)
    torch.testing.assert_close(barlow_twins_loss(z_a, z_b), barlow_twins_loss(z_a * scale + shift, z_b), rtol=1e-4,
                               atol=1e-4)  # fmt: skip


@pytest.mark.parametrize("lambd", [0.0051, 0.1])
def test_loss_matches_lightly_value_and_gradient(lambd):
    torch.manual_seed(0)
    z_a, z_b = torch.randn(16, 24, requires_grad=True), torch.randn(16, 24, requires_grad=True)
    ours = barlow_twins_loss(z_a, z_b, lambd)
    theirs = BarlowTwinsLoss(lambda_param=lambd)(z_a, z_b)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    for ours_grad, theirs_grad in zip(torch.autograd.grad(ours, (z_a, z_b)), torch.autograd.grad(theirs, (z_a, z_b))):
        torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-4, atol=1e-6)


def test_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        barlow_twins_loss(torch.randn(4, 8), torch.randn(4, 6))
    with pytest.raises(ValueError, match="at least 2"):
        barlow_twins_loss(torch.randn(1, 8), torch.randn(1, 8))


def test_config_defaults_and_validation(tiny_vit_config):
    config = BarlowTwinsConfig()
    assert (config.projection_hidden_dim, config.projection_dim, config.projection_num_layers) == (8192, 8192, 3)
    assert config.lambd == 0.0051 and config.gather_distributed
    for field, value in [("projection_dim", 0), ("projection_num_layers", 0), ("lambd", -1.0)]:
        with pytest.raises(ValueError, match=field):
            BarlowTwinsConfig(backbone_config=tiny_vit_config.to_dict(), **{field: value})


def test_projector_is_the_original_layout(config):
    model = BarlowTwinsForPreTraining(config)
    layers = list(model.projector.layers)
    assert [type(m) for m in layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    assert all(m.bias is None for m in layers if isinstance(m, nn.Linear))


def test_forward_is_the_loss_of_the_projections(config):
    torch.manual_seed(0)
    model = BarlowTwinsForPreTraining(config).train()
    views = two_views()
    out = model(global_views=views, labels=torch.zeros(8, dtype=torch.long))
    with torch.no_grad():
        z = model.projector(model.barlow_twins(views.flatten(0, 1)).pooler_output)
    torch.testing.assert_close(out.loss, BarlowTwinsLoss(0.0051)(z[:8], z[8:]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.embeddings, z[:8])
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "mask_token" not in n)
    with pytest.raises(ValueError, match="2, batch"):
        model(global_views=torch.randn(3, 2, 3, 32, 32))


def test_training_steps_lower_the_loss(config):
    torch.manual_seed(0)
    model = BarlowTwinsForPreTraining(config).train()
    losses = train_losses(model, {"global_views": two_views()}, 6, hooks=False)
    assert losses[-1] < 0.8 * losses[0], losses


def test_automodel_loads_the_encoder(config, tmp_path):
    torch.manual_seed(0)
    model = BarlowTwinsForPreTraining(config)
    model.save_pretrained(tmp_path)
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is BarlowTwinsForPreTraining
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is BarlowTwinsModel
    rebuilt = AutoConfig.for_model("barlow_twins", backbone_config=config.backbone_config.to_dict(), **PROJECTOR)
    assert type(AutoModelForPreTraining.from_config(rebuilt)) is BarlowTwinsForPreTraining
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels).pooler_output, model.eval().barlow_twins(pixels).pooler_output)
