"""The batch-dependent parts of iBOT, DINOv2 and MSN on 2 CPU processes (gloo) equal one process with the whole
batch: Sinkhorn-Knopp centering (also with a different number of rows per process, as DINOv2's masked patches),
the patch centre over a varying number of masked patches, and MSN's loss (Sinkhorn targets, me-max over the global
batch) with its gradients. KoLeo is computed per process, as in DINOv2, so it has no cross-process counterpart."""

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hf_ssl.modeling.losses import mean_over_rows, msn_loss, sinkhorn_knopp_teacher_probs

WORLD_SIZE = 2
ROWS = (3, 5)  # masked patches per process: unequal
LOCAL_BATCH = 4


def tensors():
    generator = torch.Generator().manual_seed(0)
    return dict(
        patch_logits=torch.randn(sum(ROWS), 6, generator=generator),
        cls_logits=torch.randn(WORLD_SIZE * LOCAL_BATCH, 6, generator=generator),
        anchors=torch.randn(2, WORLD_SIZE * LOCAL_BATCH, 7, generator=generator),
        targets=torch.randn(WORLD_SIZE * LOCAL_BATCH, 7, generator=generator),
    )


def worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        data = tensors()
        rows = slice(sum(ROWS[:rank]), sum(ROWS[: rank + 1]))
        local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        anchors = data["anchors"][:, local].clone().requires_grad_(True)
        loss, _, _ = msn_loss(anchors, data["targets"][local], sinkhorn_iterations=3)
        loss.backward()
        torch.save({
            "patch_targets": sinkhorn_knopp_teacher_probs(data["patch_logits"][rows], 0.07),
            "cls_targets": sinkhorn_knopp_teacher_probs(data["cls_logits"][local], 0.04),
            "patch_center": mean_over_rows(data["patch_logits"][rows]),
            "msn_loss": loss.detach(),
            "msn_grad": anchors.grad,
        }, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ranks")
    context = mp.start_processes(
        worker, args=(str(out_dir / "init"), str(out_dir)), nprocs=WORLD_SIZE, join=False, start_method="fork"
    )
    deadline = time.monotonic() + 90
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the 2-process run did not finish within 90 s")
    return [torch.load(out_dir / f"{rank}.pt") for rank in range(WORLD_SIZE)]


def test_sinkhorn_knopp_centering_on_two_processes_equals_one_process(results):
    data = tensors()
    patches = sinkhorn_knopp_teacher_probs(data["patch_logits"], 0.07)
    torch.testing.assert_close(torch.cat([r["patch_targets"] for r in results]), patches, rtol=1e-5, atol=1e-6)
    cls = sinkhorn_knopp_teacher_probs(data["cls_logits"], 0.04)
    torch.testing.assert_close(torch.cat([r["cls_targets"] for r in results]), cls, rtol=1e-5, atol=1e-6)


def test_patch_centre_over_unequal_numbers_of_rows(results):
    expected = tensors()["patch_logits"].mean(dim=0, keepdim=True)
    for result in results:
        mean, count = result["patch_center"]
        torch.testing.assert_close(mean, expected)
        assert count.item() == sum(ROWS)


def test_msn_loss_and_gradient_on_two_processes_equal_one_process(results):
    data = tensors()
    anchors = data["anchors"].clone().requires_grad_(True)
    loss, _, _ = msn_loss(anchors, data["targets"], sinkhorn_iterations=3)
    loss.backward()
    torch.testing.assert_close(torch.stack([r["msn_loss"] for r in results]).mean(), loss.detach(),
                               rtol=1e-5, atol=1e-6)
    for rank, result in enumerate(results):
        local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        # data-parallel training averages the processes' gradients
        torch.testing.assert_close(result["msn_grad"] / WORLD_SIZE, anchors.grad[:, local], rtol=1e-4, atol=1e-7)
