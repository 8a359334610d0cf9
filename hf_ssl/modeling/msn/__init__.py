from .configuration_msn import MSNConfig
from .modeling_msn import MSNForImageClassification, MSNForPreTraining, MSNModel, MSNPreTrainedModel

__all__ = ["MSNConfig", "MSNModel", "MSNForImageClassification", "MSNForPreTraining", "MSNPreTrainedModel"]
