"""DINO models. `DinoModel` is the encoder the paper evaluates: the teacher, pooled on the CLS token."""

from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel
from .configuration_dino import DinoConfig


class DinoPreTrainedModel(SSLPreTrainedModel):
    config_class = DinoConfig
    base_model_prefix = "dino"


class DinoModel(SSLModel, DinoPreTrainedModel):
    """DINO feature extractor: CLS token after the final norm (ViT), global average pool (ResNet)."""


class DinoForImageClassification(SSLForImageClassification, DinoPreTrainedModel):
    """DINO encoder with a linear classifier on `pooler_output`."""

    model_class = DinoModel
