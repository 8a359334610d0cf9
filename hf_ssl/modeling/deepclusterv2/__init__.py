from .configuration_deepclusterv2 import DeepClusterV2Config
from .modeling_deepclusterv2 import (
    DeepClusterV2ForImageClassification,
    DeepClusterV2ForPreTraining,
    DeepClusterV2Model,
    DeepClusterV2PreTrainedModel,
)

__all__ = [
    "DeepClusterV2Config",
    "DeepClusterV2Model",
    "DeepClusterV2ForImageClassification",
    "DeepClusterV2ForPreTraining",
    "DeepClusterV2PreTrainedModel",
]
