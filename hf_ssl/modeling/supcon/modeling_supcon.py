"""SupCon models. `SupConModel` is the encoder the paper evaluates (the projection network is discarded)."""

import torch

from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel, SSLPreTrainingOutput
from ..heads import ProjectionMLP
from ..losses import supcon_loss
from .configuration_supcon import SupConConfig


class SupConPreTrainedModel(SSLPreTrainedModel):
    config_class = SupConConfig
    base_model_prefix = "supcon"


class SupConModel(SSLModel, SupConPreTrainedModel):
    """SupCon feature extractor r = Enc(x): global average pool (ResNet), CLS token (ViT)."""


class SupConForImageClassification(SSLForImageClassification, SupConPreTrainedModel):
    """SupCon encoder with a linear classifier on `pooler_output`."""

    model_class = SupConModel


class SupConForPreTraining(SupConPreTrainedModel):
    """Supervised contrastive learning: the encoder (`supcon`) and the projection network (`projector`: linear,
    ReLU, linear) map every view to z; each view is pulled towards every other view of its class in the batch and
    pushed from the rest (L_out). Needs the dataset's labels (the batch's `labels`)."""

    def __init__(self, config: SupConConfig):
        super().__init__(config)
        self.supcon = SupConModel(config)
        self.projector = ProjectionMLP(
            config.hidden_size, config.projection_hidden_dim, config.projection_dim, num_layers=2, use_bn=False
        )
        self.post_init()

    def forward(
        self, global_views: torch.Tensor, labels: torch.Tensor | None = None, **kwargs
    ) -> SSLPreTrainingOutput:
        """L_out over `global_views` (V, B, C, H, W) of B images of classes `labels` (B,)."""
        if labels is None:
            raise ValueError(
                "SupCon is supervised: the batch needs `labels`, which the data loader adds when the dataset has an "
                "integer `label` column (e.g. fashion_mnist, an image folder with class subfolders)"
            )
        if global_views.ndim != 5:
            raise ValueError(f"global_views must be (views, batch, C, H, W), got {tuple(global_views.shape)}")
        batch_size = global_views.shape[1]
        features = self.supcon(global_views.flatten(0, 1)).pooler_output
        z = self.projector(features).unflatten(0, (-1, batch_size))
        loss = supcon_loss(z, labels, self.config.temperature, gather_distributed=self.config.gather_distributed)
        return SSLPreTrainingOutput(loss=loss, logs={"loss": loss.detach()}, embeddings=z[0].detach())
