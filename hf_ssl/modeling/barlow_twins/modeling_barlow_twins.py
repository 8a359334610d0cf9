"""Barlow Twins models. `BarlowTwinsModel` is the encoder the paper evaluates (the projector is discarded)."""

import torch

from ..base import (
    SSLForImageClassification,
    SSLModel,
    SSLPreTrainedModel,
    SSLPreTrainingOutput,
    check_two_views,
)
from ..heads import ProjectionMLP
from ..losses import barlow_twins_loss
from .configuration_barlow_twins import BarlowTwinsConfig


class BarlowTwinsPreTrainedModel(SSLPreTrainedModel):
    config_class = BarlowTwinsConfig
    base_model_prefix = "barlow_twins"


class BarlowTwinsModel(SSLModel, BarlowTwinsPreTrainedModel):
    """Barlow Twins feature extractor: global average pool (ResNet), CLS token (ViT)."""


class BarlowTwinsForImageClassification(SSLForImageClassification, BarlowTwinsPreTrainedModel):
    """Barlow Twins encoder with a linear classifier on `pooler_output`."""

    model_class = BarlowTwinsModel


class BarlowTwinsForPreTraining(BarlowTwinsPreTrainedModel):
    """Barlow Twins: the twin encoder (`barlow_twins`) and projector (`projector`, linear layers without bias, each
    but the last followed by BatchNorm and ReLU) embed both views; the loss drives the cross-correlation matrix of the
    two batch-standardised embeddings to the identity."""

    def __init__(self, config: BarlowTwinsConfig):
        super().__init__(config)
        self.barlow_twins = BarlowTwinsModel(config)
        self.projector = ProjectionMLP(
            config.hidden_size,
            config.projection_hidden_dim,
            config.projection_dim,
            num_layers=config.projection_num_layers,
            use_bn=True,
            bias=False,
        )
        self.post_init()

    def forward(self, global_views: torch.Tensor, **kwargs) -> SSLPreTrainingOutput:
        """Barlow Twins loss of `global_views` (2, B, C, H, W): one encoder and one projector pass over both views."""
        check_two_views(global_views, "Barlow Twins")
        batch_size = global_views.shape[1]
        features = self.barlow_twins(global_views.flatten(0, 1)).pooler_output
        z_a, z_b = self.projector(features).split(batch_size)
        loss = barlow_twins_loss(z_a, z_b, self.config.lambd, gather_distributed=self.config.gather_distributed)
        return SSLPreTrainingOutput(loss=loss, logs={"loss": loss.detach()}, embeddings=z_a.detach())
