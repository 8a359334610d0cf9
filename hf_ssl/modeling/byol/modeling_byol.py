"""BYOL models. `BYOLModel` is the encoder the paper evaluates: the online encoder f_theta."""

import torch
import torch.nn.functional as F
from transformers import initialization as init

from ..base import (
    SSLForImageClassification,
    SSLModel,
    SSLPreTrainedModel,
    SSLPreTrainingOutput,
    check_two_views,
)
from ..heads import ProjectionMLP
from ..losses import byol_loss
from ..teacher import cosine_schedule, ema_update_, make_teacher
from .configuration_byol import BYOLConfig


class BYOLPreTrainedModel(SSLPreTrainedModel):
    config_class = BYOLConfig
    base_model_prefix = "byol"


class BYOLModel(SSLModel, BYOLPreTrainedModel):
    """BYOL feature extractor y = f(x): global average pool (ResNet), CLS token (ViT)."""


class BYOLForImageClassification(SSLForImageClassification, BYOLPreTrainedModel):
    """BYOL encoder with a linear classifier on `pooler_output`."""

    model_class = BYOLModel


class BYOLForPreTraining(BYOLPreTrainedModel):
    """BYOL (Grill et al., 2020): the online network (`byol` + `projector` + `predictor`) predicts the target
    network's projection (`target_encoder` + `target_projector`, an EMA of the online encoder and projector) of the
    other view; the loss is the normalized MSE 2 - 2 cos, symmetrized over the views. No negatives. Each view is
    encoded in its own pass, as the original (BatchNorm statistics per view).

    Step hook `on_step_end`: EMA update of the target with tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2.
    """

    def __init__(self, config: BYOLConfig):
        super().__init__(config)
        self.byol = BYOLModel(config)
        self.projector = ProjectionMLP(config.hidden_size, config.projection_hidden_dim, config.projection_dim)
        self.predictor = ProjectionMLP(config.projection_dim, config.prediction_hidden_dim, config.projection_dim)
        self.register_buffer("current_momentum", torch.tensor(config.momentum), persistent=False)
        self.post_init()
        # The target starts equal to the (initialised) online network.
        self.target_encoder = make_teacher(self.byol)
        self.target_projector = make_teacher(self.projector)
        self.freeze_untrained_parameters()

    def freeze_untrained_parameters(self) -> None:
        """The target follows the online network by EMA only."""
        self.target_encoder.requires_grad_(False)
        self.target_projector.requires_grad_(False)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:
            init.constant_(self.current_momentum, self.config.momentum)

    def momentum_at_step(self, step: int, total_steps: int) -> float:
        """tau: cosine from `momentum` (tau_base) to 1 over the training."""
        return cosine_schedule(self.config.momentum, 1.0, step, total_steps)

    def forward(self, global_views: torch.Tensor, **kwargs) -> SSLPreTrainingOutput:
        """BYOL loss on `global_views` (2, B, C, H, W)."""
        check_two_views(global_views, "BYOL")
        z1, z2 = (self.projector(self.byol(view).pooler_output) for view in global_views)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():
            t1, t2 = (self.target_projector(self.target_encoder(view).pooler_output) for view in global_views)
        loss = byol_loss(p1, p2, t1, t2)
        with torch.no_grad():
            logs = {
                "loss": loss.detach(),
                "momentum": self.current_momentum.detach().clone(),
                "online_target_cosine": F.cosine_similarity(z1, t1, dim=-1).mean(),
            }
        return SSLPreTrainingOutput(loss=loss, logs=logs, embeddings=z1.detach())

    def on_step_end(self, progress) -> None:
        """EMA update of the target with the rate of this step, then that of the next step."""
        momentum = self.momentum_at_step(progress.step, progress.total_steps)
        ema_update_(self.target_encoder, self.byol, momentum)
        ema_update_(self.target_projector, self.projector, momentum)
        self.current_momentum.fill_(self.momentum_at_step(progress.step + 1, progress.total_steps))
