from .configuration_mae import MaeConfig
from .modeling_mae import MaeForImageClassification, MaeForPreTraining, MaeModel, MaePreTrainedModel

__all__ = ["MaeConfig", "MaeModel", "MaeForImageClassification", "MaeForPreTraining", "MaePreTrainedModel"]
