"""Registration of every hf_ssl config, model and image processor with the `transformers` Auto classes."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
)

from .backbones import SSLResNetConfig, SSLResNetModel, SSLViTConfig, SSLViTModel
from .modeling.dino import DinoConfig, DinoForImageClassification, DinoForPreTraining, DinoModel
from .modeling.simclr import SimCLRConfig, SimCLRForImageClassification, SimCLRForPreTraining, SimCLRModel
from .processing import SSLImageProcessor, SSLImageProcessorPil

# (config, feature model, classification model or None, pretraining model or None)
MODELS = [
    (SSLViTConfig, SSLViTModel, None, None),
    (SSLResNetConfig, SSLResNetModel, None, None),
    (DinoConfig, DinoModel, DinoForImageClassification, DinoForPreTraining),
    (SimCLRConfig, SimCLRModel, SimCLRForImageClassification, SimCLRForPreTraining),
]


def register_auto_classes() -> None:
    """Make the Auto classes (config, models, image processors) know our model types (idempotent)."""
    image_processors = {"torchvision": SSLImageProcessor, "pil": SSLImageProcessorPil}
    for config_class, model_class, classification_class, pretraining_class in MODELS:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoImageProcessor.register(config_class, image_processor_classes=image_processors, exist_ok=True)
        if classification_class is not None:
            AutoModelForImageClassification.register(config_class, classification_class, exist_ok=True)
        if pretraining_class is not None:
            AutoModelForPreTraining.register(config_class, pretraining_class, exist_ok=True)
