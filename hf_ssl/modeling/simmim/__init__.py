from .configuration_simmim import SimMIMConfig
from .modeling_simmim import SimMIMForImageClassification, SimMIMForPreTraining, SimMIMModel, SimMIMPreTrainedModel

__all__ = [
    "SimMIMConfig",
    "SimMIMModel",
    "SimMIMForImageClassification",
    "SimMIMForPreTraining",
    "SimMIMPreTrainedModel",
]
