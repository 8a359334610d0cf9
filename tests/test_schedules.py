"""Schedules: values at given steps against hand-computed numbers, and the batch-size scaling of the lr."""

import math

import numpy as np
import pytest

from hf_ssl.training.progress import TrainingProgress
from hf_ssl.training.schedules import cosine_with_warmup, scaled_lr


def test_warmup_starts_at_start_value_and_reaches_base_on_its_last_step():
    values = cosine_with_warmup(base=1.0, final=0.0, total_steps=20, warmup_steps=5, start_warmup=0.2)
    assert len(values) == 20
    assert values[0] == pytest.approx(0.2)
    assert values[2] == pytest.approx(0.2 + 0.8 * 2 / 4)  # linspace(0.2, 1.0, 5)
    assert values[4] == pytest.approx(1.0)
    assert values[5] == pytest.approx(1.0)  # first cosine step: cos(0) = 1


def test_cosine_midpoint_is_the_mean_of_base_and_final():
    values = cosine_with_warmup(base=0.5, final=0.1, total_steps=110, warmup_steps=10)
    # after warm-up, step 10 + j has final + (base - final) * (1 + cos(pi * j / 100)) / 2
    assert values[60] == pytest.approx(0.3)
    assert values[35] == pytest.approx(0.1 + 0.4 * (1 + math.cos(math.pi * 25 / 100)) / 2)
    assert values[-1] == pytest.approx(0.1 + 0.4 * (1 + math.cos(math.pi * 99 / 100)) / 2)
    assert np.all(np.diff(values[10:]) < 0)


def test_weight_decay_schedule_without_warmup_rises_from_0_04_to_0_4():
    values = cosine_with_warmup(0.04, 0.4, total_steps=1000)
    assert values[0] == pytest.approx(0.04)
    assert values[500] == pytest.approx(0.22)
    assert 0.399 < values[-1] < 0.4


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match="warmup_steps"):
        cosine_with_warmup(1.0, 0.0, total_steps=10, warmup_steps=11)
    with pytest.raises(ValueError, match="total_steps"):
        cosine_with_warmup(1.0, 0.0, total_steps=0)


def test_lr_scaling_rules():
    assert scaled_lr(5e-4, 1024, 256, "linear") == pytest.approx(2e-3)
    assert scaled_lr(0.3, 4096, 256, "linear") == pytest.approx(4.8)  # SimCLR's 0.3 x BatchSize / 256
    assert scaled_lr(0.004, 4096, 1024, "sqrt") == pytest.approx(0.008)  # DINOv2's sqrt rule
    assert scaled_lr(1e-3, 64, 256, "none") == 1e-3
    with pytest.raises(ValueError, match="lr_scaling"):
        scaled_lr(1e-3, 64, 256, "cubic")


def test_training_progress_epoch():
    progress = TrainingProgress(step=15, total_steps=100, steps_per_epoch=10)
    assert progress.epoch == 1.5
    with pytest.raises(ValueError, match="steps_per_epoch"):
        TrainingProgress(step=0, total_steps=10, steps_per_epoch=0)
