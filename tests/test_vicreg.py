"""VICReg: the loss terms (hand values, invariances, lightly), the pretraining model and what `AutoModel` loads."""

import pytest
import torch
from lightly.loss import VICRegLoss
from transformers import AutoModel, AutoModelForPreTraining

from hf_ssl import VICRegConfig, VICRegForPreTraining, VICRegModel
from hf_ssl.modeling.losses import vicreg_covariance, vicreg_loss, vicreg_variance

from helpers import train_losses

EXPANDER = dict(expander_hidden_dim=64, expander_dim=32)


@pytest.fixture
def config(tiny_vit_config):
    return VICRegConfig(backbone_config=tiny_vit_config.to_dict(), **EXPANDER)


def two_views(batch=8, size=32, seed=0):
    return torch.randn(2, batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_loss_hand_computed():
    # z_a = [[1, 0], [3, 2]]: stds sqrt(2) (no variance penalty), covariance [[2, 2], [2, 2]]: c = (4 + 4) / 2 = 4.
    # z_b = [[1, 1], [1, 3]]: stds sqrt(0 + 1e-4) = 0.01 and sqrt(2) -> v = (0.99 + 0) / 2; no covariance.
    # invariance: mean of (0, -1, 2, -1)^2 = 1.5.
    z_a = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    z_b = torch.tensor([[1.0, 1.0], [1.0, 3.0]])
    loss, terms = vicreg_loss(z_a, z_b)
    assert terms["invariance"].item() == pytest.approx(1.5)
    assert terms["variance"].item() == pytest.approx((0.0 + 0.495) / 2)
    assert terms["covariance"].item() == pytest.approx(4.0)
    assert loss.item() == pytest.approx(25 * 1.5 + 25 * 0.2475 + 4.0, rel=1e-6)


def test_variance_term_is_zero_when_every_std_is_at_least_one():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(64, 16, generator=generator)
    z = z / z.std(dim=0) * (1.0 + torch.rand(16, generator=generator))  # stds in [1, 2]
    assert vicreg_variance(z).item() == 0.0
    # one dimension at std 0.5: the hinge is (1 - sqrt(0.25 + eps)) / D
    z[:, 3] = z[:, 3] / z[:, 3].std() * 0.5
    assert vicreg_variance(z).item() == pytest.approx((1 - (0.25 + 1e-4) ** 0.5) / 16, rel=1e-4)


def test_covariance_term_is_zero_for_decorrelated_embeddings_and_ignores_the_diagonal():
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(dim=0))
    z = q * torch.arange(1.0, 9.0, dtype=torch.float64)  # orthogonal centred columns of different scales
    assert vicreg_covariance(z).item() == pytest.approx(0.0, abs=1e-12)


def test_loss_is_invariant_to_a_shift_of_the_embeddings():
    generator = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(16, 8, generator=generator), torch.randn(16, 8, generator=generator)
    shift = torch.randn(8, generator=generator)
    torch.testing.assert_close(vicreg_loss(z_a + shift, z_b + shift)[0], vicreg_loss(z_a, z_b)[0])


def test_loss_matches_lightly_value_and_gradient():
    torch.manual_seed(0)
    z_a, z_b = torch.randn(16, 24, requires_grad=True), torch.randn(16, 24, requires_grad=True)
    ours, _ = vicreg_loss(z_a, z_b)
    theirs = VICRegLoss()(z_a, z_b)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    for ours_grad, theirs_grad in zip(torch.autograd.grad(ours, (z_a, z_b)), torch.autograd.grad(theirs, (z_a, z_b))):
        torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-5, atol=1e-7)


def test_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        vicreg_loss(torch.randn(4, 8), torch.randn(4, 6))
    with pytest.raises(ValueError, match="at least 2"):
        vicreg_loss(torch.randn(1, 8), torch.randn(1, 8))


def test_config_defaults_and_validation(tiny_vit_config):
    config = VICRegConfig()
    assert (config.expander_hidden_dim, config.expander_dim, config.expander_num_layers) == (8192, 8192, 3)
    assert (config.invariance_weight, config.variance_weight, config.covariance_weight) == (25.0, 25.0, 1.0)
    for field, value in [("expander_dim", 0), ("variance_weight", -1.0), ("variance_target", 0.0)]:
        with pytest.raises(ValueError, match=field):
            VICRegConfig(backbone_config=tiny_vit_config.to_dict(), **{field: value})


def test_forward_logs_the_terms_and_trains(config):
    torch.manual_seed(0)
    model = VICRegForPreTraining(config).train()
    views = two_views()
    out = model(global_views=views)
    with torch.no_grad():
        z = model.expander(model.vicreg(views.flatten(0, 1)).pooler_output)
    torch.testing.assert_close(out.loss, VICRegLoss()(z[:8], z[8:]), rtol=1e-5, atol=1e-5)
    assert set(out.logs) == {"loss", "invariance", "variance", "covariance"}
    with pytest.raises(ValueError, match="2, batch"):
        model(global_views=torch.randn(1, 2, 3, 32, 32))

    losses = train_losses(model, {"global_views": views}, 6, hooks=False)
    assert losses[-1] < 0.8 * losses[0], losses


def test_automodel_loads_the_encoder(config, tmp_path):
    torch.manual_seed(0)
    model = VICRegForPreTraining(config)
    model.save_pretrained(tmp_path)
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is VICRegForPreTraining
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is VICRegModel
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels).pooler_output, model.eval().vicreg(pixels).pooler_output)
