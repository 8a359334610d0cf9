from .configuration_barlow_twins import BarlowTwinsConfig
from .modeling_barlow_twins import (
    BarlowTwinsForImageClassification,
    BarlowTwinsForPreTraining,
    BarlowTwinsModel,
    BarlowTwinsPreTrainedModel,
)

__all__ = [
    "BarlowTwinsConfig",
    "BarlowTwinsModel",
    "BarlowTwinsForImageClassification",
    "BarlowTwinsForPreTraining",
    "BarlowTwinsPreTrainedModel",
]
