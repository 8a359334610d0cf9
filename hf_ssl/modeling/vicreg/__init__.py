from .configuration_vicreg import VICRegConfig
from .modeling_vicreg import VICRegForImageClassification, VICRegForPreTraining, VICRegModel, VICRegPreTrainedModel

__all__ = [
    "VICRegConfig",
    "VICRegModel",
    "VICRegForImageClassification",
    "VICRegForPreTraining",
    "VICRegPreTrainedModel",
]
