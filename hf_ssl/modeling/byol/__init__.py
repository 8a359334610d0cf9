from .configuration_byol import BYOLConfig
from .modeling_byol import BYOLForImageClassification, BYOLForPreTraining, BYOLModel, BYOLPreTrainedModel

__all__ = ["BYOLConfig", "BYOLModel", "BYOLForImageClassification", "BYOLForPreTraining", "BYOLPreTrainedModel"]
