"""VICReg models. `VICRegModel` is the encoder the paper evaluates (the expander is discarded)."""

import torch

from ..base import (
    SSLForImageClassification,
    SSLModel,
    SSLPreTrainedModel,
    SSLPreTrainingOutput,
    check_two_views,
)
from ..heads import ProjectionMLP
from ..losses import vicreg_loss
from .configuration_vicreg import VICRegConfig


class VICRegPreTrainedModel(SSLPreTrainedModel):
    config_class = VICRegConfig
    base_model_prefix = "vicreg"


class VICRegModel(SSLModel, VICRegPreTrainedModel):
    """VICReg feature extractor y = f(x): global average pool (ResNet), CLS token (ViT)."""


class VICRegForImageClassification(SSLForImageClassification, VICRegPreTrainedModel):
    """VICReg encoder with a linear classifier on `pooler_output`."""

    model_class = VICRegModel


class VICRegForPreTraining(VICRegPreTrainedModel):
    """VICReg: the encoder f (`vicreg`) and the expander h (`expander`: linear layers, each but the last followed by
    BatchNorm and ReLU) map both views to z; the loss keeps the views' embeddings close (invariance), every
    dimension's standard deviation above gamma (variance) and the dimensions decorrelated (covariance).

    The expander's last layer has a bias, which the original omits: the loss does not depend on it (every term is
    invariant to a shift of z), so it only offsets the logged embeddings."""

    def __init__(self, config: VICRegConfig):
        super().__init__(config)
        self.vicreg = VICRegModel(config)
        self.expander = ProjectionMLP(
            config.hidden_size,
            config.expander_hidden_dim,
            config.expander_dim,
            num_layers=config.expander_num_layers,
            use_bn=True,
        )
        self.post_init()

    def forward(self, global_views: torch.Tensor, **kwargs) -> SSLPreTrainingOutput:
        """VICReg loss of `global_views` (2, B, C, H, W): one encoder and one expander pass over both views."""
        check_two_views(global_views, "VICReg")
        batch_size = global_views.shape[1]
        features = self.vicreg(global_views.flatten(0, 1)).pooler_output
        z_a, z_b = self.expander(features).split(batch_size)
        config = self.config
        loss, terms = vicreg_loss(
            z_a,
            z_b,
            invariance_weight=config.invariance_weight,
            variance_weight=config.variance_weight,
            covariance_weight=config.covariance_weight,
            gamma=config.variance_target,
            eps=config.variance_eps,
            gather_distributed=config.gather_distributed,
        )
        return SSLPreTrainingOutput(loss=loss, logs={"loss": loss.detach(), **terms}, embeddings=z_a.detach())
