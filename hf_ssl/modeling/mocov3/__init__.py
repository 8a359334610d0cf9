from .configuration_mocov3 import MoCoV3Config
from .modeling_mocov3 import (
    MoCoV3ForImageClassification,
    MoCoV3ForPreTraining,
    MoCoV3Model,
    MoCoV3PreTrainedModel,
)

__all__ = [
    "MoCoV3Config",
    "MoCoV3Model",
    "MoCoV3ForImageClassification",
    "MoCoV3ForPreTraining",
    "MoCoV3PreTrainedModel",
]
