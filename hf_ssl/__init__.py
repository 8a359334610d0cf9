"""hf-ssl: self-supervised vision models as `transformers` models.

Importing the package registers every config, model and image processor with the Auto classes.
"""

from .auto import register_auto_classes
from .backbones import SSLViTConfig, SSLViTModel
from .modeling.dino import DinoConfig, DinoForImageClassification, DinoModel

__version__ = "0.1.0"

register_auto_classes()

__all__ = [
    "SSLViTConfig",
    "SSLViTModel",
    "DinoConfig",
    "DinoModel",
    "DinoForImageClassification",
]
