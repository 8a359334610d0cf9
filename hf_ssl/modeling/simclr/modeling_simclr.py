"""SimCLR models. `SimCLRModel` is the encoder f the paper evaluates (the projection head g is discarded)."""

import torch
import torch.nn.functional as F

from ..base import (
    SSLForImageClassification,
    SSLModel,
    SSLPreTrainedModel,
    SSLPreTrainingOutput,
    check_two_views,
)
from ..heads import ProjectionMLP
from ..losses import nt_xent_loss
from .configuration_simclr import SimCLRConfig


class SimCLRPreTrainedModel(SSLPreTrainedModel):
    config_class = SimCLRConfig
    base_model_prefix = "simclr"


class SimCLRModel(SSLModel, SimCLRPreTrainedModel):
    """SimCLR feature extractor h = f(x): global average pool (ResNet), CLS token (ViT)."""


class SimCLRForImageClassification(SSLForImageClassification, SimCLRPreTrainedModel):
    """SimCLR encoder with a linear classifier on `pooler_output`."""

    model_class = SimCLRModel


class SimCLRForPreTraining(SimCLRPreTrainedModel):
    """SimCLR: the encoder f (`simclr`) and the projector g (`projector`) map both views of every image to
    z = g(f(x)); NT-Xent pulls the two views of an image together and pushes the other 2N - 2 embeddings away."""

    def __init__(self, config: SimCLRConfig):
        super().__init__(config)
        self.simclr = SimCLRModel(config)
        self.projector = ProjectionMLP(
            config.hidden_size,
            config.projection_hidden_dim,
            config.projection_dim,
            num_layers=config.projection_num_layers,
            use_bn=config.projection_use_bn,
            last_bn=config.projection_last_bn,
            bias=not config.projection_use_bn,
        )
        self.post_init()

    def forward(self, global_views: torch.Tensor, **kwargs) -> SSLPreTrainingOutput:
        """NT-Xent on `global_views` (2, B, C, H, W): one encoder pass and one projector pass over both views (the
        BatchNorm statistics cover the 2B crops, as the original)."""
        check_two_views(global_views, "SimCLR")
        batch_size = global_views.shape[1]
        features = self.simclr(global_views.flatten(0, 1)).pooler_output
        z1, z2 = self.projector(features).split(batch_size)
        loss = nt_xent_loss(z1, z2, self.config.temperature, gather_distributed=self.config.gather_distributed)
        with torch.no_grad():
            logs = {"loss": loss.detach(), "positive_cosine": F.cosine_similarity(z1, z2, dim=-1).mean()}
        return SSLPreTrainingOutput(loss=loss, logs=logs, embeddings=z1.detach())
