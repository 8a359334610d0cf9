from .configuration_ssl_ijepa import IJepaSSLConfig
from .modeling_ssl_ijepa import (
    IJepaSSLForImageClassification,
    IJepaSSLForPreTraining,
    IJepaSSLModel,
    IJepaSSLPreTrainedModel,
)

__all__ = [
    "IJepaSSLConfig",
    "IJepaSSLModel",
    "IJepaSSLForImageClassification",
    "IJepaSSLForPreTraining",
    "IJepaSSLPreTrainedModel",
]
