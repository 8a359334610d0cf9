"""Per-step schedules (learning rate, weight decay) and the batch-size scaling of the learning rate.

`cosine_with_warmup` is DINO's `cosine_scheduler` (utils.py): a linear warm-up from `start_warmup` that reaches
`base` on the last warm-up step, then a half cosine from `base` towards `final`.
"""

import math

import numpy as np

LR_SCALINGS = ("linear", "sqrt", "none")


def cosine_with_warmup(
    base: float, final: float, total_steps: int, warmup_steps: int = 0, start_warmup: float = 0.0
) -> np.ndarray:
    """The value at every step 0..total_steps-1.

    Step `i < warmup_steps` gets `start_warmup + (base - start_warmup) * i / (warmup_steps - 1)`; after warm-up, step
    `warmup_steps + j` gets `final + (base - final) * (1 + cos(pi * j / n)) / 2` with `n = total_steps - warmup_steps`.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    warmup = np.linspace(start_warmup, base, warmup_steps)
    decay_steps = total_steps - warmup_steps
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * np.arange(decay_steps) / max(decay_steps, 1)))
    return np.concatenate([warmup, cosine])


def scaled_lr(lr: float, global_batch_size: int, base_batch_size: int, scaling: str) -> float:
    """`lr` given per `base_batch_size` images, scaled to the global batch: linearly (Goyal et al.), by the square
    root (SimCLR's rule for small batches), or not at all."""
    if scaling not in LR_SCALINGS:
        raise ValueError(f"lr_scaling must be one of {LR_SCALINGS}, got {scaling!r}")
    ratio = global_batch_size / base_batch_size
    if scaling == "linear":
        return lr * ratio
    if scaling == "sqrt":
        return lr * math.sqrt(ratio)
    return lr
