from .configuration_dino import DinoConfig
from .modeling_dino import DinoForImageClassification, DinoModel, DinoPreTrainedModel

__all__ = ["DinoConfig", "DinoModel", "DinoForImageClassification", "DinoPreTrainedModel"]
