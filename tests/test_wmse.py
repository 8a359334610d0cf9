"""W-MSE: Cholesky whitening, the loss (hand values, lightly's WMSELoss), the pretraining model and what `AutoModel`
loads."""

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import WMSELoss
from transformers import AutoModel, AutoModelForPreTraining

from hf_ssl import WMSEConfig, WMSEForPreTraining, WMSEModel
from hf_ssl.modeling.losses import cholesky_whiten, wmse_loss

HEAD = dict(projection_hidden_dim=64, projection_dim=8, whitening_size=16)


@pytest.fixture
def config(tiny_vit_config):
    return WMSEConfig(backbone_config=tiny_vit_config.to_dict(), **HEAD)


def two_views(batch=32, size=32, seed=0):
    return torch.randn(2, batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_whitening_gives_zero_mean_identity_covariance():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=generator) @ (torch.eye(6) + 0.5 * torch.randn(6, 6, generator=generator)) + 3.0
    z = cholesky_whiten(x)
    torch.testing.assert_close(z.mean(dim=0), torch.zeros(6), atol=5e-4, rtol=0)
    torch.testing.assert_close(z.T @ z / 63, torch.eye(6), atol=1e-4, rtol=0)
    # W = L^-1 is lower triangular: the first whitened coordinate is the standardised first input
    torch.testing.assert_close(z[:, 0], (x[:, 0] - x[:, 0].mean()) / x[:, 0].std(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="more samples"):
        cholesky_whiten(torch.randn(4, 6))


def test_loss_hand_computed():
    # one sub-batch of 3 one-dimensional samples: whitening is standardisation, (x - 1) / 1 for x = (0, 1, 2)
    # view 1 = (0, 1, 2) -> (-1, 0, 1); view 2 = (0, 2, 4) -> (-1, 0, 1): identical, MSE 0
    z = torch.tensor([[[0.0], [1.0], [2.0]], [[0.0], [2.0], [4.0]]])
    assert wmse_loss(z, whitening_size=3, normalize=False).item() == pytest.approx(0.0, abs=1e-6)
    # view 2 = (2, 1, 0) -> (1, 0, -1): MSE (4 + 0 + 4) / 3
    z = torch.tensor([[[0.0], [1.0], [2.0]], [[2.0], [1.0], [0.0]]])
    assert wmse_loss(z, whitening_size=3, normalize=False).item() == pytest.approx(8 / 3, rel=1e-5)
    # normalised 1-d vectors are signs: (-1, ., 1) vs (1, ., -1) -> (4 + 4) / 3 (0 normalises to 0)
    assert wmse_loss(z, whitening_size=3).item() == pytest.approx(8 / 3, rel=1e-5)


def test_loss_is_invariant_to_an_invertible_linear_map_of_each_view():
    # whitening removes any full-rank linear map (lower-triangular ones exactly, for the Cholesky factor)
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(2, 32, 4, generator=generator)
    lower = torch.tril(torch.rand(4, 4, generator=generator)) + torch.eye(4)
    mapped = torch.stack([z[0] @ lower.T + 1.0, z[1]])
    torch.testing.assert_close(wmse_loss(mapped, 32), wmse_loss(z, 32), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("num_views, whitening_iterations", [(2, 1), (4, 2)])
def test_loss_matches_lightly(num_views, whitening_iterations):
    z = torch.randn(num_views, 64, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    torch.manual_seed(0)  # both draw the sub-batches with torch.randperm(B) from the global RNG
    ours = wmse_loss(z, whitening_size=16, whitening_iterations=whitening_iterations)
    torch.manual_seed(0)
    reference = WMSELoss(embedding_dim=8, w_size=16, w_iter=whitening_iterations, num_samples=num_views)
    theirs = reference(z.flatten(0, 1))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    ours_grad, theirs_grad = torch.autograd.grad(ours, z), torch.autograd.grad(theirs, z)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-3, atol=1e-5)


def test_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="whitening_size"):
        wmse_loss(torch.randn(2, 30, 8), whitening_size=16)
    with pytest.raises(ValueError, match="whitening_size"):
        wmse_loss(torch.randn(2, 32, 8), whitening_size=8)
    with pytest.raises(ValueError, match="views"):
        wmse_loss(torch.randn(1, 32, 8), whitening_size=16)


def test_config_defaults_and_validation(tiny_vit_config):
    config = WMSEConfig()
    assert (config.projection_hidden_dim, config.projection_dim, config.whitening_size) == (1024, 64, 128)
    assert config.whitening_iterations == 1 and config.whitening_eps == 0.0 and config.normalize
    with pytest.raises(ValueError, match="whitening_size"):
        WMSEConfig(backbone_config=tiny_vit_config.to_dict(), projection_dim=64, whitening_size=64)
    with pytest.raises(ValueError, match="whitening_eps"):
        WMSEConfig(backbone_config=tiny_vit_config.to_dict(), whitening_eps=1.0)


def test_forward_uses_every_view_and_trains(config):
    torch.manual_seed(0)
    model = WMSEForPreTraining(config).train()
    views = two_views()
    local_views = torch.randn(2, 32, 3, 16, 16)
    torch.manual_seed(1)
    out = model(global_views=views, local_views=local_views)
    with torch.no_grad():
        features = torch.cat([model.wmse(views.flatten(0, 1)).pooler_output,
                              model.wmse(local_views.flatten(0, 1)).pooler_output])  # fmt: skip
        z = model.projector(features)  # one BatchNorm batch over every crop
    torch.manual_seed(1)
    torch.testing.assert_close(out.loss, wmse_loss(z.unflatten(0, (4, 32)), whitening_size=16), rtol=1e-4, atol=1e-5)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        torch.manual_seed(0)  # the same sub-batches every step
        loss = model(global_views=views).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.8 * losses[0], losses


def test_automodel_loads_the_encoder(config, tmp_path):
    torch.manual_seed(0)
    model = WMSEForPreTraining(config)
    model.save_pretrained(tmp_path)
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is WMSEForPreTraining
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is WMSEModel
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels).pooler_output, model.eval().wmse(pixels).pooler_output)
