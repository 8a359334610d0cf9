"""Registration of every hf_ssl config, model and image processor with the `transformers` Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .backbones import SSLViTConfig, SSLViTModel
from .modeling.dino import DinoConfig, DinoForImageClassification, DinoModel

# (config, feature model, classification model or None)
MODELS = [
    (SSLViTConfig, SSLViTModel, None),
    (DinoConfig, DinoModel, DinoForImageClassification),
]


def register_auto_classes() -> None:
    """Make `AutoConfig`/`AutoModel`/`AutoModelForImageClassification` know our model types (idempotent)."""
    for config_class, model_class, classification_class in MODELS:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        if classification_class is not None:
            AutoModelForImageClassification.register(config_class, classification_class, exist_ok=True)
