from .configuration_supcon import SupConConfig
from .modeling_supcon import SupConForImageClassification, SupConForPreTraining, SupConModel, SupConPreTrainedModel

__all__ = [
    "SupConConfig",
    "SupConModel",
    "SupConForImageClassification",
    "SupConForPreTraining",
    "SupConPreTrainedModel",
]
