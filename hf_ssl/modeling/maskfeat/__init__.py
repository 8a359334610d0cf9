from .configuration_maskfeat import MaskFeatConfig
from .modeling_maskfeat import (
    MaskFeatForImageClassification,
    MaskFeatForPreTraining,
    MaskFeatModel,
    MaskFeatPreTrainedModel,
)

__all__ = [
    "MaskFeatConfig",
    "MaskFeatModel",
    "MaskFeatForImageClassification",
    "MaskFeatForPreTraining",
    "MaskFeatPreTrainedModel",
]
