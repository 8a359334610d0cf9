"""The few collectives the losses need. Every helper is the identity on a single process (no process group
initialised), so the same model code runs on a laptop and under `accelerate launch`."""

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Index of this process (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process along dim 0, in rank order, keeping the gradient.

    The backward pass sums the gradients every process computes for this process' slice and returns that sum,
    so a loss that contrasts local anchors with the global batch gets the gradient of the global loss (times the
    world size, which the data-parallel gradient average divides out). Every process must hold the same shape.
    """
    if not is_distributed():
        return tensor
    return torch.cat(dist_fn.all_gather(tensor), dim=0)


@torch.no_grad()
def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over processes, as a new tensor without gradient (the input is left untouched)."""
    tensor = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


@torch.no_grad()
def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over processes, as a new tensor without gradient."""
    return all_reduce_sum(tensor) / world_size()


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process along dim 0, in rank order, without gradient (MoCo's
    `concat_all_gather`): for momentum-encoder keys and the features that enter a queue. Every process must hold
    the same shape."""
    tensor = tensor.detach()
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over processes, keeping the gradient (Barlow Twins' global statistics).

    The backward pass sums the incoming gradients over processes, so when every process computes the same loss from
    the reduced tensor, each gets the gradient of that loss times the world size, the convention of
    `gather_with_grad` (the data-parallel gradient average divides it out).
    """
    if not is_distributed():
        return tensor
    return dist_fn.all_reduce(tensor)


@torch.no_grad()
def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite `tensor`, in place, with process `src`'s (k-means centroids drawn on one process)."""
    if is_distributed():
        dist.broadcast(tensor, src)
    return tensor
