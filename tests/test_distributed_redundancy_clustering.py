"""The batch-dependent losses of Barlow Twins, VICReg, SwAV (Sinkhorn-Knopp) and SupCon on 2 CPU processes (gloo)
equal the same computation on one process holding the whole batch: values, and gradients up to the world-size
factor that the data-parallel gradient average divides out. DeepCluster v2's spherical k-means on 2 processes equals
Lloyd's iterations over the union of their embeddings. (W-MSE whitens sub-batches of each process on their own, as
the original does, so it has no cross-process counterpart.)"""

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from hf_ssl.modeling.clustering import spherical_kmeans
from hf_ssl.modeling.losses import barlow_twins_loss, sinkhorn_knopp, supcon_loss, vicreg_loss

WORLD_SIZE = 2
LOCAL_BATCH = 4
NUM_CLUSTERS, KMEANS_ITERATIONS = 3, 4


def global_batch():
    """The same tensors on every process: two views (2, N, D), Sinkhorn scores (N, K), labels (N,)."""
    generator = torch.Generator().manual_seed(0)
    n = WORLD_SIZE * LOCAL_BATCH
    views = torch.randn(2, n, 6, generator=generator)
    scores = F.normalize(torch.randn(n, 5, generator=generator), dim=1)
    labels = torch.tensor([0, 1, 2, 0, 1, 1, 3, 0])
    return views, scores, labels


def losses_and_grads(z1, z2, labels):
    """Barlow Twins, VICReg and SupCon on (z1, z2), each with the gradients of z1 and z2."""
    results = {}
    for name, loss_fn in {
        "barlow": lambda a, b: barlow_twins_loss(a, b, lambd=0.1),
        "vicreg": lambda a, b: vicreg_loss(a, b)[0],
        "supcon": lambda a, b: supcon_loss(torch.stack([a, b]), labels, temperature=0.2),
    }.items():
        a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
        loss = loss_fn(a, b)
        loss.backward()
        results[name] = (loss.detach(), a.grad, b.grad)
    return results


def worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        views, scores, labels = global_batch()
        local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        results = losses_and_grads(views[0, local], views[1, local], labels[local])
        results["codes"] = sinkhorn_knopp(scores[local])
        generator = torch.Generator().manual_seed(0)
        results["kmeans"] = spherical_kmeans(F.normalize(views[0, local], dim=1), NUM_CLUSTERS, KMEANS_ITERATIONS,
                                             generator=generator)  # fmt: skip
        torch.save(results, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ranks")
    # fork: the workers inherit the imported modules (one intra-op thread each: a forked OpenMP pool can hang)
    context = mp.start_processes(
        worker, args=(str(out_dir / "init"), str(out_dir)), nprocs=WORLD_SIZE, join=False, start_method="fork"
    )
    deadline = time.monotonic() + 60
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the 2-process run did not finish within 60 s")
    return [torch.load(out_dir / f"{rank}.pt") for rank in range(WORLD_SIZE)]


@pytest.mark.parametrize("name", ["barlow", "vicreg", "supcon"])
def test_loss_on_two_processes_equals_one_process(results, name):
    views, _, labels = global_batch()
    loss, grad1, grad2 = losses_and_grads(views[0], views[1], labels)[name]
    # Barlow Twins: every process computes the global loss; VICReg and SupCon: the mean of the per-process losses
    torch.testing.assert_close(torch.stack([r[name][0] for r in results]).mean(), loss, rtol=1e-5, atol=1e-5)
    if name == "barlow":
        for result in results:
            torch.testing.assert_close(result[name][0], loss, rtol=1e-5, atol=1e-5)
    for rank, result in enumerate(results):
        local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        torch.testing.assert_close(result[name][1] / WORLD_SIZE, grad1[local], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(result[name][2] / WORLD_SIZE, grad2[local], rtol=1e-4, atol=1e-6)


def test_sinkhorn_on_two_processes_equals_one_process(results):
    _, scores, _ = global_batch()
    expected = sinkhorn_knopp(scores)
    torch.testing.assert_close(torch.cat([r["codes"] for r in results]), expected, rtol=1e-5, atol=1e-7)
    # and differs from normalising each process' half alone
    assert not torch.allclose(sinkhorn_knopp(scores[:LOCAL_BATCH]), expected[:LOCAL_BATCH], atol=1e-4)


def test_spherical_kmeans_on_two_processes_equals_lloyd_over_the_global_batch(results):
    views, _, _ = global_batch()
    embeddings = F.normalize(views[0], dim=1)
    # the start: NUM_CLUSTERS distinct embeddings of process 0, drawn by its generator, then global E/M steps
    start = torch.randperm(LOCAL_BATCH, generator=torch.Generator().manual_seed(0))[:NUM_CLUSTERS]
    centroids = embeddings[start]
    for _ in range(KMEANS_ITERATIONS):
        assignments = (embeddings @ centroids.T).argmax(dim=1)
        counts = torch.bincount(assignments, minlength=NUM_CLUSTERS)
        assert (counts > 0).all()  # no re-seeding in this example
        sums = torch.zeros_like(centroids).index_add_(0, assignments, embeddings)
        centroids = F.normalize(sums / counts[:, None], dim=1)
    assignments = (embeddings @ centroids.T).argmax(dim=1)
    for result in results:  # the same centroids on every process
        torch.testing.assert_close(result["kmeans"][0], centroids, rtol=1e-5, atol=1e-6)
    assert torch.equal(torch.cat([result["kmeans"][1] for result in results]), assignments)
    assert len(assignments.unique()) > 1
