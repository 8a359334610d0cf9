"""MoCo v2/v3 and NNCLR on 2 CPU processes (gloo) equal the same computation on one process with the whole batch:
MoCo v3's loss with the keys gathered, NNCLR's loss with the predictions gathered and its support-set update, and
MoCo v2's loss and queue update (the keys of the global batch enter the queue of every process)."""

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hf_ssl import MoCoConfig, MoCoForPreTraining, SSLViTConfig
from hf_ssl.modeling.distributed import gather_no_grad
from hf_ssl.modeling.losses import mocov3_loss, nnclr_loss
from hf_ssl.modeling.memory import FeatureQueue
from hf_ssl.training.progress import TrainingProgress

WORLD_SIZE = 2
LOCAL_BATCH = 3
N = WORLD_SIZE * LOCAL_BATCH


def global_tensors():
    """Four (N, 8) tensors, the same on every process: MoCo v3's q1, q2, k1, k2 and NNCLR's nn1, nn2, p1, p2."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(4, N, 8, generator=generator)


def global_views():
    return torch.randn(2, N, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def moco_model():
    torch.manual_seed(0)
    vit = SSLViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = MoCoConfig(backbone_config=vit.to_dict(), projection_hidden_dim=32, projection_dim=8, queue_size=10)
    return MoCoForPreTraining(config).train()


def fresh_queue():
    torch.manual_seed(2)
    return FeatureQueue(10, 8)


def worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        result = {}
        tensors = [t[local].clone().requires_grad_(True) for t in global_tensors()]
        loss = mocov3_loss(*tensors, temperature=0.2)
        loss.backward()
        result["mocov3"] = (loss.detach(), tensors[0].grad, tensors[1].grad)

        tensors = [t[local].clone().requires_grad_(True) for t in global_tensors()]
        loss = nnclr_loss(*tensors, temperature=0.1)
        loss.backward()
        result["nnclr"] = (loss.detach(), tensors[2].grad, tensors[3].grad)

        queue = fresh_queue()
        queue.enqueue(gather_no_grad(global_tensors()[0, local]))
        result["support_set"] = (queue.features, queue.pointer)

        model = moco_model()
        loss = model(global_views=global_views()[:, local]).loss
        model.on_step_end(TrainingProgress(0, 10, 5))
        result["moco"] = (loss.detach(), model.queue.features, model.queue.pointer)
        torch.save(result, os.path.join(out_dir, f"{rank}.pt"))
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


def assert_loss_and_gradients_equal_one_process(results, name, loss, grads):
    # each process averages its own queries; their mean is the global loss
    torch.testing.assert_close(torch.stack([r[name][0] for r in results]).mean(), loss, rtol=1e-5, atol=1e-6)
    # data-parallel training averages gradients over processes: each process' gradient / world size equals the
    # one-process gradient of its slice
    for rank, result in enumerate(results):
        local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        for got, expected in zip(result[name][1:], grads):
            torch.testing.assert_close(got / WORLD_SIZE, expected[local], rtol=1e-5, atol=1e-6)


def test_mocov3_keys_gathered_on_two_processes_equal_one_process(results):
    tensors = [t.clone().requires_grad_(True) for t in global_tensors()]
    loss = mocov3_loss(*tensors, temperature=0.2)
    loss.backward()
    assert_loss_and_gradients_equal_one_process(results, "mocov3", loss.detach(), [tensors[0].grad, tensors[1].grad])


def test_nnclr_predictions_gathered_on_two_processes_equal_one_process(results):
    tensors = [t.clone().requires_grad_(True) for t in global_tensors()]
    loss = nnclr_loss(*tensors, temperature=0.1)
    loss.backward()
    assert_loss_and_gradients_equal_one_process(results, "nnclr", loss.detach(), [tensors[2].grad, tensors[3].grad])


def test_support_set_gets_the_global_batch_on_every_process(results):
    queue = fresh_queue()
    queue.enqueue(global_tensors()[0])
    for result in results:
        torch.testing.assert_close(result["support_set"][0], queue.features)
        assert result["support_set"][1].item() == N


def test_moco_v2_loss_and_queue_update_on_two_processes_equal_one_process(results):
    model = moco_model()
    loss = model(global_views=global_views()).loss
    model.on_step_end(TrainingProgress(0, 10, 5))
    torch.testing.assert_close(torch.stack([r["moco"][0] for r in results]).mean(), loss.detach(), rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    for result in results:  # every process enqueued the keys of the global batch, in rank order
        torch.testing.assert_close(result["moco"][1], model.queue.features, rtol=1e-5, atol=1e-6)
        assert result["moco"][2].item() == N
