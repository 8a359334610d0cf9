from .configuration_dino import DinoConfig
from .modeling_dino import DinoForImageClassification, DinoForPreTraining, DinoModel, DinoPreTrainedModel

__all__ = ["DinoConfig", "DinoModel", "DinoForImageClassification", "DinoForPreTraining", "DinoPreTrainedModel"]
