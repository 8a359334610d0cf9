"""Where training stands, as the engine hands it to a model's step hooks."""

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingProgress:
    """The optimizer step being taken and the run's length, in optimizer steps.

    Args:
        step: optimizer steps completed before the current one, so 0 during the first step. Both hooks of one
            iteration (`on_before_optimizer_step` and `on_step_end`) see the same value, which is the 0-based index
            of that iteration: the index into a per-step schedule, as in DINO's `momentum_schedule[it]`.
        total_steps: optimizer steps of the whole run.
        steps_per_epoch: optimizer steps in one pass over the data.
    """

    step: int
    total_steps: int
    steps_per_epoch: int

    def __post_init__(self):
        if self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if not 0 <= self.step <= self.total_steps:
            raise ValueError(f"step must be in [0, total_steps={self.total_steps}], got {self.step}")

    @property
    def epoch(self) -> float:
        """Epochs completed, fractional: step / steps_per_epoch."""
        return self.step / self.steps_per_epoch
