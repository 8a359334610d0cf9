from .configuration_dinov2_ssl import Dinov2SSLConfig
from .modeling_dinov2_ssl import (
    Dinov2SSLForImageClassification,
    Dinov2SSLForPreTraining,
    Dinov2SSLModel,
    Dinov2SSLPreTrainedModel,
)

__all__ = [
    "Dinov2SSLConfig",
    "Dinov2SSLModel",
    "Dinov2SSLForImageClassification",
    "Dinov2SSLForPreTraining",
    "Dinov2SSLPreTrainedModel",
]
