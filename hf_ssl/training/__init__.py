"""The accelerate pretraining engine: recipes, optimizers (AdamW, SGD, LARS), schedules, checkpoints, monitors."""

from .checkpoint import latest_checkpoint
from .engine import train
from .monitors import NonFiniteError, embedding_std, rankme
from .optim import LARS, build_optimizer, param_groups
from .progress import TrainingProgress
from .recipe import Recipe, load_recipe
from .schedules import cosine_with_warmup, scaled_lr

__all__ = [
    "LARS",
    "NonFiniteError",
    "Recipe",
    "TrainingProgress",
    "build_optimizer",
    "cosine_with_warmup",
    "embedding_std",
    "latest_checkpoint",
    "load_recipe",
    "param_groups",
    "rankme",
    "scaled_lr",
    "train",
]
