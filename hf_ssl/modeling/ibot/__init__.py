from .configuration_ibot import IBOTConfig
from .modeling_ibot import IBOTForImageClassification, IBOTForPreTraining, IBOTModel, IBOTPreTrainedModel

__all__ = ["IBOTConfig", "IBOTModel", "IBOTForImageClassification", "IBOTForPreTraining", "IBOTPreTrainedModel"]
