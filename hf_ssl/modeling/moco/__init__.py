from .configuration_moco import MoCoConfig
from .modeling_moco import MoCoForImageClassification, MoCoForPreTraining, MoCoModel, MoCoPreTrainedModel

__all__ = ["MoCoConfig", "MoCoModel", "MoCoForImageClassification", "MoCoForPreTraining", "MoCoPreTrainedModel"]
