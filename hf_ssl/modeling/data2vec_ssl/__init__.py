from .configuration_data2vec_ssl import Data2VecSSLConfig
from .modeling_data2vec_ssl import (
    Data2VecSSLForImageClassification,
    Data2VecSSLForPreTraining,
    Data2VecSSLModel,
    Data2VecSSLPreTrainedModel,
)

__all__ = [
    "Data2VecSSLConfig",
    "Data2VecSSLModel",
    "Data2VecSSLForImageClassification",
    "Data2VecSSLForPreTraining",
    "Data2VecSSLPreTrainedModel",
]
