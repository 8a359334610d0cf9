from .configuration_simsiam import SimSiamConfig
from .modeling_simsiam import (
    SimSiamForImageClassification,
    SimSiamForPreTraining,
    SimSiamModel,
    SimSiamPreTrainedModel,
)

__all__ = [
    "SimSiamConfig",
    "SimSiamModel",
    "SimSiamForImageClassification",
    "SimSiamForPreTraining",
    "SimSiamPreTrainedModel",
]
