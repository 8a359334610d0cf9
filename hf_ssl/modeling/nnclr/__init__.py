from .configuration_nnclr import NNCLRConfig
from .modeling_nnclr import NNCLRForImageClassification, NNCLRForPreTraining, NNCLRModel, NNCLRPreTrainedModel

__all__ = ["NNCLRConfig", "NNCLRModel", "NNCLRForImageClassification", "NNCLRForPreTraining", "NNCLRPreTrainedModel"]
