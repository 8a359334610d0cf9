"""Helpers shared by the method tests."""

import torch

from hf_ssl.training.progress import TrainingProgress


def train_steps(model, inputs: dict, steps: int, lr: float = 1e-3, steps_per_epoch: int | None = None,
                hooks: bool = True) -> list[dict[str, float]]:  # fmt: skip
    """`steps` AdamW steps of `model` on the same `inputs`; with `hooks`, the model's step hooks are called as the
    engine calls them (epochs of `steps_per_epoch` steps, default one epoch). The loss and logs of every step."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    logs = []
    for step in range(steps):
        progress = TrainingProgress(step=step, total_steps=steps, steps_per_epoch=steps_per_epoch or steps)
        out = model(**inputs)
        logs.append({**{name: value.item() for name, value in out.logs.items()}, "loss": out.loss.item()})
        optimizer.zero_grad()
        out.loss.backward()
        if hooks and hasattr(model, "on_before_optimizer_step"):
            model.on_before_optimizer_step(progress)
        optimizer.step()
        if hooks and hasattr(model, "on_step_end"):
            model.on_step_end(progress)
    return logs


def train_losses(model, inputs: dict, steps: int, **options) -> list[float]:
    """The losses of `train_steps`."""
    return [log["loss"] for log in train_steps(model, inputs, steps, **options)]
