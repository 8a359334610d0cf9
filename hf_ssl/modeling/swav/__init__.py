from .configuration_swav import SwAVConfig
from .modeling_swav import SwAVForImageClassification, SwAVForPreTraining, SwAVModel, SwAVPreTrainedModel

__all__ = ["SwAVConfig", "SwAVModel", "SwAVForImageClassification", "SwAVForPreTraining", "SwAVPreTrainedModel"]
