"""DeepCluster v2: spherical k-means (recovery, empty-cluster re-seeding), the loss, the memory bank and the epoch-end
clustering hook, and what `AutoModel` loads."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForPreTraining

from hf_ssl import DeepClusterV2Config, DeepClusterV2ForPreTraining, DeepClusterV2Model
from hf_ssl.modeling.clustering import spherical_kmeans
from hf_ssl.modeling.losses import deepcluster_loss
from hf_ssl.training.progress import TrainingProgress

HEAD = dict(projection_hidden_dim=64, projection_dim=16, num_prototypes=[4, 6, 5], memory_size=24)


@pytest.fixture
def config(tiny_vit_config):
    return DeepClusterV2Config(backbone_config=tiny_vit_config.to_dict(), **HEAD)


def crops(batch=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, batch, 3, 32, 32, generator=generator), torch.randn(2, batch, 3, 16, 16, generator=generator)


# ---------------------------------------------------------------- k-means


def clustered(points_per_cluster=20, noise=0.05, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(8)[:3]  # three orthogonal directions
    points = centres.repeat_interleave(points_per_cluster, 0) + noise * torch.randn(3 * points_per_cluster, 8,
                                                                                    generator=generator)  # fmt: skip
    return F.normalize(points, dim=1), centres


def test_kmeans_recovers_separated_clusters():
    points, centres = clustered()
    centroids, assignments = spherical_kmeans(points, 3, iterations=10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(centroids.norm(dim=1), torch.ones(3))
    # each true cluster maps to one centroid, close to its centre
    groups = assignments.view(3, 20)
    assert all(len(set(group.tolist())) == 1 for group in groups) and len(set(groups[:, 0].tolist())) == 3
    for cluster, centre in zip(groups[:, 0], centres):
        assert F.cosine_similarity(centroids[cluster], centre, dim=0) > 0.99
    # the assignments are the final E step: the most similar centroid
    torch.testing.assert_close(assignments, (points @ centroids.T).argmax(dim=1))


def test_kmeans_reseeds_empty_clusters_with_data_points():
    # 20 copies of e0, one e1, one e2: the initial centroids collide on e0, leaving clusters empty; re-seeding with
    # random points ends with one centroid on each distinct point
    points = torch.cat([torch.eye(3)[:1].repeat(20, 1), torch.eye(3)[1:]])
    centroids, assignments = spherical_kmeans(points, 3, iterations=30, generator=torch.Generator().manual_seed(0))
    assert sorted(map(tuple, centroids.round().tolist())) == sorted(map(tuple, torch.eye(3).tolist()))
    assert torch.bincount(assignments, minlength=3).min() > 0
    # without re-seeding (0 iterations: the initial draw) some clusters duplicate e0
    initial, _ = spherical_kmeans(points, 3, iterations=0, generator=torch.Generator().manual_seed(0))
    assert len({tuple(row) for row in initial.tolist()}) < 3


def test_kmeans_rejects_bad_input():
    with pytest.raises(ValueError, match="num_clusters"):
        spherical_kmeans(torch.randn(4, 3), 5)
    with pytest.raises(ValueError, match="embeddings"):
        spherical_kmeans(torch.randn(4), 2)


# ---------------------------------------------------------------- loss


def test_loss_hand_computed():
    # two sets of prototypes; set 0: K = 2, two crops of one image, target 0; set 1: K = 3, target 2
    tau = 0.5
    scores0 = torch.tensor([[[1.0, 0.0]], [[0.0, 0.5]]])
    scores1 = torch.tensor([[[0.0, 0.0, 1.0]], [[0.2, 0.4, 0.6]]])
    log_softmax = lambda row, k: row[k] / tau - math.log(sum(math.exp(v / tau) for v in row))  # noqa: E731
    set0 = -(log_softmax([1.0, 0.0], 0) + log_softmax([0.0, 0.5], 0)) / 2
    set1 = -(log_softmax([0.0, 0.0, 1.0], 2) + log_softmax([0.2, 0.4, 0.6], 2)) / 2
    loss = deepcluster_loss([scores0, scores1], [torch.tensor([0]), torch.tensor([2])], tau)
    assert loss.item() == pytest.approx((set0 + set1) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="one target"):
        deepcluster_loss([scores0], [], tau)


# ---------------------------------------------------------------- the model


def test_config_defaults_and_validation(tiny_vit_config):
    config = DeepClusterV2Config()
    assert config.num_prototypes == [3000, 3000, 3000] and config.temperature == 0.1
    assert (config.projection_hidden_dim, config.projection_dim, config.kmeans_iterations) == (2048, 128, 10)
    backbone = tiny_vit_config.to_dict()
    with pytest.raises(ValueError, match="memory_size"):
        DeepClusterV2Config(backbone_config=backbone, num_prototypes=[10], memory_size=5)
    with pytest.raises(ValueError, match="num_prototypes"):
        DeepClusterV2Config(backbone_config=backbone, num_prototypes=[])
    with pytest.raises(ValueError, match="temperature"):
        DeepClusterV2Config(backbone_config=backbone, temperature=0.0)


def test_forward_targets_and_memory(config):
    torch.manual_seed(0)
    model = DeepClusterV2ForPreTraining(config).train()
    assert not any(p.requires_grad for p in model.prototypes.parameters())
    global_views, local_views = crops()
    out = model(global_views=global_views, local_views=local_views)
    with torch.no_grad():
        features = torch.cat([model.deepclusterv2(global_views.flatten(0, 1)).pooler_output,
                              model.deepclusterv2(local_views.flatten(0, 1)).pooler_output])  # fmt: skip
        z = F.normalize(model.projector(features), dim=-1).unflatten(0, (4, 8))
    scores = [prototypes(z) for prototypes in model.prototypes]
    # set h is assigned by global crop h mod 2: its nearest prototype
    targets = [scores[h][h % 2].argmax(-1) for h in range(3)]
    torch.testing.assert_close(out.loss, deepcluster_loss(scores, targets, 0.1), rtol=1e-5, atol=1e-6)
    # the memory holds the two global crops' projections
    assert model.memory_count.item() == 8
    torch.testing.assert_close(model.memory[0].features[:8], z[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.memory[1].features[:8], z[1], rtol=1e-5, atol=1e-6)
    out.loss.backward()
    assert model.projector.layers[0].weight.grad is not None


def test_kmeans_runs_at_the_end_of_each_epoch_and_sets_the_prototypes(config):
    torch.manual_seed(0)
    model = DeepClusterV2ForPreTraining(config).train()
    before = [p.weight.clone() for p in model.prototypes]
    for step in range(3):  # epochs of 3 steps: 24 projections, the memory size
        model(global_views=crops(seed=step)[0])
        model.on_step_end(TrainingProgress(step=step, total_steps=6, steps_per_epoch=3 if step == 2 else 100))
    for h, (prototypes, old) in enumerate(zip(model.prototypes, before)):
        assert not torch.equal(prototypes.weight, old)
        torch.testing.assert_close(prototypes.weight.norm(dim=1), torch.ones(prototypes.weight.shape[0]))
        # each centroid is the normalised mean of the memory projections nearest to it (a k-means fixed point
        # after 10 iterations on 24 points) or, when its cluster is empty, a memory projection
        memory = model.memory[h % 2].features
        assignments = (memory @ prototypes.weight.T).argmax(1)
        for k in range(prototypes.weight.shape[0]):
            members = memory[assignments == k]
            if len(members):
                torch.testing.assert_close(prototypes.weight[k], F.normalize(members.mean(0), dim=0), atol=1e-5,
                                           rtol=1e-5)  # fmt: skip


def test_training_steps_lower_the_loss(config):
    torch.manual_seed(0)
    model = DeepClusterV2ForPreTraining(config).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    global_views, local_views = crops()
    losses = []
    for _ in range(6):
        loss = model(global_views=global_views, local_views=local_views).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.8 * losses[0], losses


def test_automodel_loads_the_encoder_and_the_memory_survives(config, tmp_path):
    torch.manual_seed(0)
    model = DeepClusterV2ForPreTraining(config).train()
    model(global_views=crops()[0])
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert type(reloaded) is DeepClusterV2ForPreTraining
    assert reloaded.memory_count.item() == 8
    torch.testing.assert_close(reloaded.memory[0].features, model.memory[0].features)
    assert not any(p.requires_grad for p in reloaded.prototypes.parameters())
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is DeepClusterV2Model
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels).pooler_output, model.eval().deepclusterv2(pixels).pooler_output)
