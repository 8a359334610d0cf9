"""NNCLR models. `NNCLRModel` is the encoder the paper evaluates."""

import torch
import torch.nn.functional as F

from ..base import (
    SSLForImageClassification,
    SSLModel,
    SSLPreTrainedModel,
    SSLPreTrainingOutput,
    check_two_views,
)
from ..distributed import gather_no_grad
from ..heads import ProjectionMLP
from ..losses import nnclr_loss
from ..memory import FeatureQueue
from .configuration_nnclr import NNCLRConfig


class NNCLRPreTrainedModel(SSLPreTrainedModel):
    config_class = NNCLRConfig
    base_model_prefix = "nnclr"


class NNCLRModel(SSLModel, NNCLRPreTrainedModel):
    """NNCLR feature extractor: global average pool (ResNet), CLS token (ViT)."""


class NNCLRForImageClassification(SSLForImageClassification, NNCLRPreTrainedModel):
    """NNCLR encoder with a linear classifier on `pooler_output`."""

    model_class = NNCLRModel


class NNCLRForPreTraining(NNCLRPreTrainedModel):
    """NNCLR (Dwibedi et al., 2021): each view's projection z is replaced by its nearest neighbour NN(z, Q) in a
    support set Q of earlier projections; NN(z1, Q) must pick out the prediction p2 of the other view among the
    predictions of the global batch, and the other way round. Each view is encoded in its own pass.

    Step hook `on_step_end`: the projections of view 1 of the step (of every process: the global batch) replace
    the oldest ones in the support set. State in buffers (saved, restored on resume): `support_set.features`,
    `support_set.pointer`.
    """

    def __init__(self, config: NNCLRConfig):
        super().__init__(config)
        self.nnclr = NNCLRModel(config)
        self.projector = ProjectionMLP(
            config.hidden_size,
            config.projection_hidden_dim,
            config.projection_dim,
            num_layers=config.projection_num_layers,
            last_bn=True,
            bias=False,
        )
        self.predictor = ProjectionMLP(config.projection_dim, config.prediction_hidden_dim, config.projection_dim)
        self.support_set = FeatureQueue(config.queue_size, config.projection_dim)
        self._pending_projections: list[torch.Tensor] = []
        self.post_init()

    def forward(self, global_views: torch.Tensor, **kwargs) -> SSLPreTrainingOutput:
        """NNCLR loss on `global_views` (2, B, C, H, W). In training mode the (gathered) projections of view 1 wait
        for `on_step_end` to enter the support set."""
        check_two_views(global_views, "NNCLR")
        z1, z2 = (self.projector(self.nnclr(view).pooler_output) for view in global_views)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        nn1, nn2 = self.support_set.nearest_neighbours(z1), self.support_set.nearest_neighbours(z2)
        loss = nnclr_loss(nn1, nn2, p1, p2, self.config.temperature, self.config.gather_distributed)
        if self.training:
            projections = F.normalize(z1.detach(), dim=-1)
            self._pending_projections.append(
                gather_no_grad(projections) if self.config.gather_distributed else projections
            )
        with torch.no_grad():
            logs = {
                "loss": loss.detach(),
                # how close the support set's stand-in is to the projection it replaces
                "nn_cosine": F.cosine_similarity(nn1, z1, dim=-1).mean(),
            }
        return SSLPreTrainingOutput(loss=loss, logs=logs, embeddings=z1.detach())

    def on_step_end(self, progress) -> None:
        """Enqueue the projections of the step (all its micro-batches) into the support set."""
        if self._pending_projections:
            self.support_set.enqueue(torch.cat(self._pending_projections))
            self._pending_projections.clear()
