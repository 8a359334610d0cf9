from .configuration_beit_ssl import BeitSSLConfig
from .modeling_beit_ssl import (
    BeitSSLForImageClassification,
    BeitSSLForPreTraining,
    BeitSSLModel,
    BeitSSLPreTrainedModel,
)
from .tokenizer import KMeansPatchTokenizer, KMeansTokenizerConfig, fit_kmeans_tokenizer

__all__ = [
    "BeitSSLConfig",
    "BeitSSLModel",
    "BeitSSLForImageClassification",
    "BeitSSLForPreTraining",
    "BeitSSLPreTrainedModel",
    "KMeansPatchTokenizer",
    "KMeansTokenizerConfig",
    "fit_kmeans_tokenizer",
]
