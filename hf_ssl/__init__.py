"""hf-ssl: self-supervised vision models as `transformers` models.

Importing the package registers every config, model and image processor with the Auto classes.
"""

from .auto import register_auto_classes
from .backbones import SSLResNetConfig, SSLResNetModel, SSLViTConfig, SSLViTModel
from .modeling.dino import DinoConfig, DinoForImageClassification, DinoForPreTraining, DinoModel
from .modeling.simclr import SimCLRConfig, SimCLRForImageClassification, SimCLRForPreTraining, SimCLRModel
from .processing import SSLImageProcessor, SSLImageProcessorPil, processor_for

__version__ = "0.1.0"

register_auto_classes()

__all__ = [
    "SSLViTConfig",
    "SSLViTModel",
    "SSLResNetConfig",
    "SSLResNetModel",
    "DinoConfig",
    "DinoModel",
    "DinoForImageClassification",
    "DinoForPreTraining",
    "SimCLRConfig",
    "SimCLRModel",
    "SimCLRForImageClassification",
    "SimCLRForPreTraining",
    "SSLImageProcessor",
    "SSLImageProcessorPil",
    "processor_for",
]
