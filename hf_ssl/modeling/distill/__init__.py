from .configuration_distill import DistillConfig
from .modeling_distill import (
    DistillForImageClassification,
    DistillForPreTraining,
    DistillModel,
    DistillPreTrainedModel,
)

__all__ = [
    "DistillConfig",
    "DistillModel",
    "DistillForImageClassification",
    "DistillForPreTraining",
    "DistillPreTrainedModel",
]
