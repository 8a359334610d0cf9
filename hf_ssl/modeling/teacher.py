"""The exponential-moving-average (EMA) teacher shared by DINO, iBOT, DINOv2, BYOL, MoCo, MSN, I-JEPA, data2vec.

The teacher's parameters follow the student's, theta_t <- m * theta_t + (1 - m) * theta_s, with m raised from its
base value to 1 by a cosine schedule (BYOL, DINO). Only parameters are averaged; buffers (BatchNorm statistics)
are the teacher's own, as in the originals.
"""

import copy
import math

import torch
from torch import nn


def make_teacher(module: nn.Module) -> nn.Module:
    """A deep copy of `module` whose parameters never receive gradients (the optimizer skips them), with dropout
    and stochastic depth switched off: the originals build the teacher without them.

    The copy keeps its parent's `train()`/`eval()` mode like any other submodule: the originals run the teacher
    in training mode, so BatchNorm layers use batch statistics.
    """
    teacher = copy.deepcopy(module)
    teacher.requires_grad_(False)
    for submodule in teacher.modules():
        if isinstance(submodule, nn.modules.dropout._DropoutNd):
            submodule.p = 0.0
        if isinstance(getattr(submodule, "drop_prob", None), float):  # DropPath (ours, timm's, transformers')
            submodule.drop_prob = 0.0
    return teacher


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place, theta_t <- momentum * theta_t + (1 - momentum) * theta_s for every parameter pair.

    One fused `torch._foreach_lerp_` over all parameters; `momentum` is a Python float, so there is no host sync.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    teacher_params = list(teacher.parameters())
    student_params = list(student.parameters())
    if len(teacher_params) != len(student_params):
        raise ValueError(
            f"teacher and student differ in structure: {len(teacher_params)} vs {len(student_params)} parameters"
        )
    torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)


def cosine_schedule(base: float, final: float, step: int, total_steps: int) -> float:
    """A cosine ramp from `base` at step 0 to `final` at `total_steps` (constant after), as DINO's teacher
    momentum: `final - (final - base) * (cos(pi * step / total_steps) + 1) / 2`."""
    if total_steps <= 0:
        return final
    progress = min(max(step, 0), total_steps) / total_steps
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
