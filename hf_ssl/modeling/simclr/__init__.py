from .configuration_simclr import SimCLRConfig
from .modeling_simclr import (
    SimCLRForImageClassification,
    SimCLRForPreTraining,
    SimCLRModel,
    SimCLRPreTrainedModel,
)

__all__ = [
    "SimCLRConfig",
    "SimCLRModel",
    "SimCLRForImageClassification",
    "SimCLRForPreTraining",
    "SimCLRPreTrainedModel",
]
