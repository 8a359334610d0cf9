from .configuration_wmse import WMSEConfig
from .modeling_wmse import WMSEForImageClassification, WMSEForPreTraining, WMSEModel, WMSEPreTrainedModel

__all__ = ["WMSEConfig", "WMSEModel", "WMSEForImageClassification", "WMSEForPreTraining", "WMSEPreTrainedModel"]
