"""Encoders: our masking-aware ViT, and (through `build_backbone`) any other backbone a method can use."""

from transformers import PreTrainedConfig, PreTrainedModel

from .configuration_vit import VIT_SIZES, SSLViTConfig
from .modeling_vit import SSLViTModel


def build_backbone(config: PreTrainedConfig) -> PreTrainedModel:
    """The encoder for a backbone config, with randomly initialised weights."""
    if isinstance(config, SSLViTConfig):
        return SSLViTModel(config)
    raise ValueError(f"Unsupported backbone model_type {config.model_type!r}")


def feature_dim(config: PreTrainedConfig) -> int:
    """Width of the `pooler_output` of the backbone built from `config`."""
    if isinstance(config, SSLViTConfig):
        return config.hidden_size * (2 if config.pooling == "cls+mean" else 1)
    raise ValueError(f"Unsupported backbone model_type {config.model_type!r}")


__all__ = ["SSLViTConfig", "SSLViTModel", "VIT_SIZES", "build_backbone", "feature_dim"]
