"""The batch-dependent losses on 2 CPU processes (gloo) equal the same computation on one process with the whole
batch: NT-Xent's value and gradients, and DINO's centre update."""

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hf_ssl.modeling.losses import dino_batch_center, nt_xent_loss

WORLD_SIZE = 2
LOCAL_BATCH = 3


def global_batch():
    """The same tensors on every process: NT-Xent views (2, N, D) and DINO teacher outputs (2 views, N, K)."""
    generator = torch.Generator().manual_seed(0)
    n = WORLD_SIZE * LOCAL_BATCH
    return torch.randn(2, n, 8, generator=generator), torch.randn(2, n, 5, generator=generator)


def worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        views, teacher = global_batch()
        local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        z1 = views[0, local].clone().requires_grad_(True)
        z2 = views[1, local].clone().requires_grad_(True)
        loss = nt_xent_loss(z1, z2, temperature=0.2)
        loss.backward()
        center = dino_batch_center(teacher[:, local])
        torch.save({"loss": loss.detach(), "grad1": z1.grad, "grad2": z2.grad, "center": center},
                   os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ranks")
    # fork: the workers inherit the imported modules instead of importing transformers again (one intra-op thread
    # each, as DataLoader workers: a forked OpenMP pool can hang)
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


def test_nt_xent_on_two_processes_equals_one_process(results):
    views, _ = global_batch()
    z1, z2 = views[0].clone().requires_grad_(True), views[1].clone().requires_grad_(True)
    loss = nt_xent_loss(z1, z2, temperature=0.2)
    loss.backward()
    # Each process' loss averages its own anchors; their mean is the global loss.
    torch.testing.assert_close(torch.stack([r["loss"] for r in results]).mean(), loss.detach(), rtol=1e-5, atol=1e-5)
    # Data-parallel training averages gradients over processes: each process' gradient / world size equals the
    # one-process gradient of its slice (the negatives it lent to other processes included).
    for rank, result in enumerate(results):
        local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        torch.testing.assert_close(result["grad1"] / WORLD_SIZE, z1.grad[local], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(result["grad2"] / WORLD_SIZE, z2.grad[local], rtol=1e-5, atol=1e-5)


def test_dino_center_on_two_processes_equals_one_process(results):
    _, teacher = global_batch()
    expected = dino_batch_center(teacher)
    torch.testing.assert_close(expected, teacher.mean(dim=(0, 1)).unsqueeze(0))
    for result in results:
        torch.testing.assert_close(result["center"], expected, rtol=1e-6, atol=1e-6)
