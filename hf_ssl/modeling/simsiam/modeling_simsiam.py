"""SimSiam models. `SimSiamModel` is the encoder the paper evaluates: the backbone (the projection MLP, part of
SimSiam's f, is dropped like every projector)."""

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
from ..losses import simsiam_loss
from .configuration_simsiam import SimSiamConfig


class SimSiamPreTrainedModel(SSLPreTrainedModel):
    config_class = SimSiamConfig
    base_model_prefix = "simsiam"


class SimSiamModel(SSLModel, SimSiamPreTrainedModel):
    """SimSiam feature extractor: global average pool (ResNet), CLS token (ViT)."""


class SimSiamForImageClassification(SSLForImageClassification, SimSiamPreTrainedModel):
    """SimSiam backbone with a linear classifier on `pooler_output`."""

    model_class = SimSiamModel


class SimSiamForPreTraining(SimSiamPreTrainedModel):
    """SimSiam (Chen and He, 2021): one network, no negatives, no momentum encoder. The encoder f (`simsiam` +
    `projector`) maps each view to z, the predictor h to p = h(z); the loss is the negative cosine between p of one
    view and the stop-gradient z of the other, symmetrized. Each view is encoded in its own pass, as the original
    (BatchNorm statistics per view)."""

    def __init__(self, config: SimSiamConfig):
        super().__init__(config)
        self.simsiam = SimSiamModel(config)
        self.projector = ProjectionMLP(
            config.hidden_size,
            config.projection_hidden_dim,
            config.projection_dim,
            num_layers=config.projection_num_layers,
            last_bn=True,
            last_bn_affine=False,
            bias=False,  # every linear layer is followed by BatchNorm (the original's last bias is frozen)
        )
        self.predictor = ProjectionMLP(config.projection_dim, config.prediction_hidden_dim, config.projection_dim)
        self.post_init()

    def forward(self, global_views: torch.Tensor, **kwargs) -> SSLPreTrainingOutput:
        """SimSiam loss on `global_views` (2, B, C, H, W)."""
        check_two_views(global_views, "SimSiam")
        z1, z2 = (self.projector(self.simsiam(view).pooler_output) for view in global_views)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = simsiam_loss(p1, p2, z1, z2)
        with torch.no_grad():
            # the per-dimension std of the normalised outputs: 1/sqrt(d) when healthy, 0 when collapsed
            logs = {"loss": loss.detach(), "z_std": F.normalize(z1, dim=-1).std(dim=0).mean()}
        return SSLPreTrainingOutput(loss=loss, logs=logs, embeddings=z1.detach())
