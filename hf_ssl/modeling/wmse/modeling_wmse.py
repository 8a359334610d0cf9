"""W-MSE models. `WMSEModel` is the encoder the paper evaluates (the projection head is discarded)."""

import torch

from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel, SSLPreTrainingOutput
from ..heads import ProjectionMLP
from ..losses import wmse_loss
from .configuration_wmse import WMSEConfig


class WMSEPreTrainedModel(SSLPreTrainedModel):
    config_class = WMSEConfig
    base_model_prefix = "wmse"


class WMSEModel(SSLModel, WMSEPreTrainedModel):
    """W-MSE feature extractor: global average pool (ResNet), CLS token (ViT)."""


class WMSEForImageClassification(SSLForImageClassification, WMSEPreTrainedModel):
    """W-MSE encoder with a linear classifier on `pooler_output`."""

    model_class = WMSEModel


class WMSEForPreTraining(WMSEPreTrainedModel):
    """W-MSE: the encoder (`wmse`) and the projection head (`projector`) embed every view; the embeddings of each
    random sub-batch are whitened (zero mean, identity covariance, which rules out collapse) and the whitened views
    of an image are pulled together by the MSE. With `local_views` of the batch, every crop is a positive (the
    paper's W-MSE 4 uses 4 views)."""

    def __init__(self, config: WMSEConfig):
        super().__init__(config)
        self.wmse = WMSEModel(config)
        self.projector = ProjectionMLP(
            config.hidden_size,
            config.projection_hidden_dim,
            config.projection_dim,
            num_layers=config.projection_num_layers,
            use_bn=True,
        )
        self.post_init()

    def forward(
        self, global_views: torch.Tensor, local_views: torch.Tensor | None = None, **kwargs
    ) -> SSLPreTrainingOutput:
        """W-MSE over the views of `global_views` (V_g, B, C, H, W) and `local_views` (V_l, B, C, h, w) or None."""
        if global_views.ndim != 5 or (local_views is not None and local_views.ndim != 5):
            raise ValueError("global_views and local_views must be (views, batch, channels, height, width)")
        batch_size = global_views.shape[1]
        features = [self.wmse(global_views.flatten(0, 1)).pooler_output]
        if local_views is not None:
            features.append(self.wmse(local_views.flatten(0, 1)).pooler_output)
        z = self.projector(torch.cat(features)).unflatten(0, (-1, batch_size))
        config = self.config
        loss = wmse_loss(
            z, config.whitening_size, config.whitening_iterations, config.whitening_eps, normalize=config.normalize
        )
        return SSLPreTrainingOutput(loss=loss, logs={"loss": loss.detach()}, embeddings=z[0].detach())
