"""Encoders: our masking-aware ViT, torchvision's ResNet, and any `transformers` vision model (through `build_backbone`)."""

from torch import nn
from transformers import PreTrainedConfig

from .configuration_vit import VIT_SIZES, SSLViTConfig
from .modeling_vit import SSLViTModel
from .configuration_resnet import RESNET_DEPTHS, RESNET_NAMES, SSLResNetConfig
from .modeling_resnet import SSLResNetModel
from .transformers_backbone import TransformersBackbone, transformers_feature_dim


def build_backbone(config: PreTrainedConfig) -> nn.Module:
    """The encoder for a backbone config, with randomly initialised weights; any other `transformers` vision
    config gives its `AutoModel` wrapped so that `pooler_output` is (batch, dim)."""
    if isinstance(config, SSLViTConfig):
        return SSLViTModel(config)
    if isinstance(config, SSLResNetConfig):
        return SSLResNetModel(config)
    return TransformersBackbone(config)


def feature_dim(config: PreTrainedConfig) -> int:
    """Width of the `pooler_output` of the backbone built from `config`."""
    if isinstance(config, SSLViTConfig):
        return config.hidden_size * (2 if config.pooling == "cls+mean" else 1)
    if isinstance(config, SSLResNetConfig):
        return config.hidden_size
    return transformers_feature_dim(config)


__all__ = [
    "SSLViTConfig",
    "SSLViTModel",
    "VIT_SIZES",
    "SSLResNetConfig",
    "SSLResNetModel",
    "RESNET_DEPTHS",
    "RESNET_NAMES",
    "TransformersBackbone",
    "build_backbone",
    "feature_dim",
]
