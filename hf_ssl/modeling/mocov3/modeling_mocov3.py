"""MoCo v3 models. `MoCoV3Model` is the encoder the paper evaluates: the query (base) encoder."""

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
from ..losses import mocov3_loss
from ..teacher import cosine_schedule, ema_update_, make_teacher
from .configuration_mocov3 import MoCoV3Config


class MoCoV3PreTrainedModel(SSLPreTrainedModel):
    config_class = MoCoV3Config
    base_model_prefix = "mocov3"


class MoCoV3Model(SSLModel, MoCoV3PreTrainedModel):
    """MoCo v3 feature extractor: CLS token after the final norm (ViT), global average pool (ResNet)."""


class MoCoV3ForImageClassification(SSLForImageClassification, MoCoV3PreTrainedModel):
    """MoCo v3 encoder with a linear classifier on `pooler_output`."""

    model_class = MoCoV3Model


class MoCoV3ForPreTraining(MoCoV3PreTrainedModel):
    """MoCo v3 (Chen, Xie and He, 2021): the query encoder f_q (`mocov3` + `projector` + `predictor`) and the
    momentum encoder f_k (`momentum_encoder` + `momentum_projector`, an EMA of f_q without the predictor) see both
    views; q1 = f_q(x1) is contrasted with k2 = f_k(x2) against the keys of the other images of the global batch, and
    the other way round (no queue). Each view is encoded in its own pass, as the original (BatchNorm statistics per
    view).

    Step hook `on_step_end`: EMA update of the momentum encoder with m raised from `momentum` to 1 by a cosine.
    With `stop_grad_conv1`, the ViT patch projection keeps its random initialisation (no gradient, no update).
    """

    def __init__(self, config: MoCoV3Config):
        super().__init__(config)
        self.mocov3 = MoCoV3Model(config)
        self.projector = ProjectionMLP(
            config.hidden_size,
            config.projection_hidden_dim,
            config.projection_dim,
            num_layers=config.projection_num_layers,
            last_bn=True,
            last_bn_affine=False,
            bias=False,
        )
        self.predictor = ProjectionMLP(
            config.projection_dim,
            config.prediction_hidden_dim,
            config.projection_dim,
            num_layers=config.prediction_num_layers,
            bias=False,
        )
        self.register_buffer("current_momentum", torch.tensor(config.momentum), persistent=False)
        self.post_init()
        # The momentum encoder starts equal to the (initialised) query encoder.
        self.momentum_encoder = make_teacher(self.mocov3)
        self.momentum_projector = make_teacher(self.projector)
        self.freeze_untrained_parameters()

    def freeze_untrained_parameters(self) -> None:
        """The momentum encoder follows by EMA only; with `stop_grad_conv1` the patch projection stays random."""
        self.momentum_encoder.requires_grad_(False)
        self.momentum_projector.requires_grad_(False)
        if self.config.stop_grad_conv1:
            self.mocov3.backbone.embeddings.patch_embeddings.projection.requires_grad_(False)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:
            init.constant_(self.current_momentum, self.config.momentum)

    def momentum_at_step(self, step: int, total_steps: int) -> float:
        """m: cosine from `momentum` to 1 over the training (`--moco-m-cos`), or constant."""
        if not self.config.momentum_cosine:
            return self.config.momentum
        return cosine_schedule(self.config.momentum, 1.0, step, total_steps)

    def forward(self, global_views: torch.Tensor, **kwargs) -> SSLPreTrainingOutput:
        """Symmetrized contrastive loss on `global_views` (2, B, C, H, W)."""
        check_two_views(global_views, "MoCo v3")
        z1, z2 = (self.projector(self.mocov3(view).pooler_output) for view in global_views)
        q1, q2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():
            k1, k2 = (self.momentum_projector(self.momentum_encoder(view).pooler_output) for view in global_views)
        loss = mocov3_loss(q1, q2, k1, k2, self.config.temperature, self.config.gather_distributed)
        with torch.no_grad():
            logs = {
                "loss": loss.detach(),
                "momentum": self.current_momentum.detach().clone(),
                "positive_cosine": F.cosine_similarity(q1, k2, dim=-1).mean(),
            }
        return SSLPreTrainingOutput(loss=loss, logs=logs, embeddings=z1.detach())

    def on_step_end(self, progress) -> None:
        """EMA update of the momentum encoder with the momentum of this step, then that of the next step."""
        momentum = self.momentum_at_step(progress.step, progress.total_steps)
        ema_update_(self.momentum_encoder, self.mocov3, momentum)
        ema_update_(self.momentum_projector, self.projector, momentum)
        self.current_momentum.fill_(self.momentum_at_step(progress.step + 1, progress.total_steps))
