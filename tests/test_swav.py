"""SwAV: Sinkhorn-Knopp (marginals, lightly), the swapped-prediction loss, the prototypes' normalisation and
freezing, the queue, and what `AutoModel` loads."""

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.loss.swav_loss import sinkhorn
from transformers import AutoModel, AutoModelForPreTraining

from hf_ssl import SwAVConfig, SwAVForPreTraining, SwAVModel
from hf_ssl.modeling.heads import ClusterPrototypes
from hf_ssl.modeling.losses import sinkhorn_knopp, swav_loss
from hf_ssl.training.progress import TrainingProgress

HEAD = dict(projection_hidden_dim=64, projection_dim=16, num_prototypes=12)


@pytest.fixture
def config(tiny_vit_config):
    return SwAVConfig(backbone_config=tiny_vit_config.to_dict(), **HEAD)


def crops(batch=8, seed=0, num_local=2):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, batch, 3, 32, 32, generator=generator), torch.randn(num_local, batch, 3, 16, 16,
                                                                              generator=generator)  # fmt: skip


def cosine_scores(batch, num_prototypes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(batch, 8, generator=generator), dim=1)
    return z @ F.normalize(torch.randn(num_prototypes, 8, generator=generator), dim=1).T


# ---------------------------------------------------------------- Sinkhorn-Knopp


def test_sinkhorn_marginals():
    scores = cosine_scores(batch=24, num_prototypes=6)
    codes = sinkhorn_knopp(scores)  # (B, K), 3 iterations
    # the last step normalises the samples: each code sums to 1 exactly
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(24))
    # each prototype receives about B / K; closer than the plain softmax(scores / eps), exact in the limit
    target = torch.full((6,), 24 / 6)
    softmax_error = (F.softmax(scores / 0.05, dim=1).sum(dim=0) - target).abs().max()
    assert (codes.sum(dim=0) - target).abs().max() < 0.5 * softmax_error
    converged = sinkhorn_knopp(scores, iterations=200)
    torch.testing.assert_close(converged.sum(dim=0), target, rtol=0, atol=1e-4)
    torch.testing.assert_close(converged.sum(dim=1), torch.ones(24))
    assert (codes >= 0).all()


def test_sinkhorn_hand_computed_one_iteration():
    # exp(scores / eps) with eps = ln 2 -> Q^T = [[2, 1], [1, 1]] (rows: samples). Prototype totals 3 and 2 -> columns
    # divided by them (and K); then each sample renormalised to sum to 1.
    scores = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    codes = sinkhorn_knopp(scores, epsilon=1 / math.log(2), iterations=1)
    first = torch.tensor([2 / 3, 1 / 2])
    second = torch.tensor([1 / 3, 1 / 2])
    expected = torch.stack([first / first.sum(), second / second.sum()])
    torch.testing.assert_close(codes, expected)


def test_sinkhorn_matches_lightly_and_is_equivariant():
    scores = cosine_scores(batch=10, num_prototypes=7, seed=1)
    torch.testing.assert_close(sinkhorn_knopp(scores), sinkhorn(scores), rtol=1e-5, atol=1e-7)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sinkhorn_knopp(scores[order]), sinkhorn_knopp(scores)[order])
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn_knopp(scores, epsilon=0.0)


# ---------------------------------------------------------------- swapped prediction


def test_swav_loss_hand_computed():
    # two crops, one image, K = 2: q_0 = (1, 0), q_1 = (1/2, 1/2); p_0 = (1/2, 1/2), p_1 = (3/4, 1/4) at tau = 0.1
    tau = 0.1
    scores = torch.tensor([[[0.0, 0.0]], [[math.log(3) * tau, 0.0]]])
    codes = torch.tensor([[[1.0, 0.0]], [[0.5, 0.5]]])
    expected = (-math.log(3 / 4) + -math.log(1 / 2)) / 2  # crop 1 predicts q_0, crop 0 predicts q_1
    assert swav_loss(scores, codes, tau).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("num_local", [0, 3])
def test_swav_loss_matches_lightly(num_local):
    high = [cosine_scores(6, 9, seed=s) for s in range(2)]
    low = [cosine_scores(6, 9, seed=10 + s) for s in range(num_local)]
    codes = torch.stack([sinkhorn_knopp(h) for h in high])
    ours = swav_loss(torch.stack(high + low), codes, 0.1)
    torch.testing.assert_close(ours, SwaVLoss(temperature=0.1)(high, low).squeeze(), rtol=1e-5, atol=1e-6)


def test_swav_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="at least|>= 2"):
        swav_loss(torch.randn(1, 4, 5), torch.randn(1, 4, 5))
    with pytest.raises(ValueError, match="codes"):
        swav_loss(torch.randn(3, 4, 5), torch.randn(2, 4, 6))


# ---------------------------------------------------------------- the model


def test_config_defaults_and_validation(tiny_vit_config):
    config = SwAVConfig()
    assert (config.projection_hidden_dim, config.projection_dim, config.num_prototypes) == (2048, 128, 3000)
    assert (config.temperature, config.sinkhorn_epsilon, config.sinkhorn_iterations) == (0.1, 0.05, 3)
    assert config.freeze_prototypes_epochs == 1 and config.queue_length == 0 and config.queue_start_epoch == 15
    for field, value in [("num_prototypes", 0), ("sinkhorn_epsilon", 0.0), ("queue_length", -1)]:
        with pytest.raises(ValueError, match=field):
            SwAVConfig(backbone_config=tiny_vit_config.to_dict(), **{field: value})


def test_prototypes_are_unit_norm_after_init_and_every_step(config):
    prototypes = ClusterPrototypes(8, 5)
    torch.testing.assert_close(prototypes.weight.norm(dim=1), torch.ones(5))
    model = SwAVForPreTraining(config)
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(12))
    with torch.no_grad():
        model.prototypes.weight.mul_(3.0)
    model.on_step_end(TrainingProgress(step=0, total_steps=10, steps_per_epoch=5))
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(12))


def test_forward_is_the_swav_loss_of_all_crops(config):
    torch.manual_seed(0)
    model = SwAVForPreTraining(config).train()
    global_views, local_views = crops()
    out = model(global_views=global_views, local_views=local_views)
    with torch.no_grad():
        features = torch.cat([model.swav(global_views.flatten(0, 1)).pooler_output,
                              model.swav(local_views.flatten(0, 1)).pooler_output])  # fmt: skip
        scores = model.prototypes(F.normalize(model.projector(features), dim=-1)).split(8)
    expected = SwaVLoss(temperature=0.1)(list(scores[:2]), list(scores[2:]))
    torch.testing.assert_close(out.loss, expected.squeeze(), rtol=1e-5, atol=1e-5)
    assert set(out.logs) == {"loss", "code_entropy", "prototypes_used"}
    out.loss.backward()
    assert model.prototypes.weight.grad is not None and model.projector.layers[0].weight.grad is not None


def test_prototypes_frozen_during_the_first_epochs(config):
    model = SwAVForPreTraining(config).train()
    global_views, local_views = crops()
    model(global_views=global_views, local_views=local_views).loss.backward()
    model.on_before_optimizer_step(TrainingProgress(step=4, total_steps=20, steps_per_epoch=5))
    assert model.prototypes.weight.grad is None
    model(global_views=global_views, local_views=local_views).loss.backward()
    model.on_before_optimizer_step(TrainingProgress(step=5, total_steps=20, steps_per_epoch=5))
    assert model.prototypes.weight.grad is not None


def test_queue_fills_from_its_epoch_and_enlarges_the_sinkhorn_batch(tiny_vit_config):
    config = SwAVConfig(backbone_config=tiny_vit_config.to_dict(), queue_length=16, queue_start_epoch=1, **HEAD)
    torch.manual_seed(0)
    model = SwAVForPreTraining(config).train()
    global_views, local_views = crops()
    model(global_views=global_views, local_views=local_views)
    assert model.queue_count.item() == 0  # epoch 0: not filled yet
    model.on_step_end(TrainingProgress(step=4, total_steps=20, steps_per_epoch=5))  # the next step is in epoch 1
    assert model.epoch.item() == 1
    for expected_count in (8, 16):
        model(global_views=global_views, local_views=local_views)
        assert model.queue_count.item() == expected_count
    assert model.queue_is_full()

    # once full, the codes of a crop are those of Sinkhorn over [queue; batch] (the queue holds the crop's own z)
    scores = torch.randn(8, 12).div(4)
    with torch.no_grad():
        queue_scores = model.queues[0].features @ model.prototypes.weight.T
    expected = sinkhorn_knopp(torch.cat([queue_scores, scores]))[-8:]
    torch.testing.assert_close(model.codes(scores, crop=0, use_queue=True), expected)
    assert not torch.allclose(model.codes(scores, crop=0, use_queue=False), expected)
    torch.testing.assert_close(model.queues[0].features.norm(dim=1), torch.ones(16))


def test_training_steps_lower_the_loss(config):
    torch.manual_seed(0)
    model = SwAVForPreTraining(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    global_views, local_views = crops()
    losses = []
    for step in range(8):
        loss = model(global_views=global_views, local_views=local_views).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        progress = TrainingProgress(step=step, total_steps=8, steps_per_epoch=2)
        model.on_before_optimizer_step(progress)
        optimizer.step()
        model.on_step_end(progress)
    assert losses[-1] < 0.9 * losses[0], losses


def test_automodel_loads_the_encoder(config, tmp_path):
    torch.manual_seed(0)
    model = SwAVForPreTraining(config)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert type(reloaded) is SwAVForPreTraining
    torch.testing.assert_close(reloaded.prototypes.weight, model.prototypes.weight)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is SwAVModel
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels).pooler_output, model.eval().swav(pixels).pooler_output)
