"""MoCo v1/v2 models. `MoCoModel` is the encoder the paper evaluates: the query encoder (`encoder_q`)."""

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
from ..losses import moco_loss
from ..memory import FeatureQueue
from ..teacher import ema_update_, make_teacher
from .configuration_moco import MoCoConfig


class MoCoPreTrainedModel(SSLPreTrainedModel):
    config_class = MoCoConfig
    base_model_prefix = "moco"


class MoCoModel(SSLModel, MoCoPreTrainedModel):
    """MoCo feature extractor: global average pool (ResNet), CLS token (ViT)."""


class MoCoForImageClassification(SSLForImageClassification, MoCoPreTrainedModel):
    """MoCo encoder with a linear classifier on `pooler_output`."""

    model_class = MoCoModel


class MoCoForPreTraining(MoCoPreTrainedModel):
    """MoCo v2 (He et al., 2020; Chen et al., 2020): the query encoder (`moco` + `projector`) maps view 1 to q, the
    key encoder (`key_encoder` + `key_projector`, an EMA of the query encoder) maps view 2 to k; InfoNCE pulls q
    towards k and pushes it from the K keys of the queue.

    Step hook `on_step_end`: EMA update of the key encoder (constant momentum m), then the keys of the step (of every
    process: the global batch) replace the oldest ones in the queue, as the original's dequeue-and-enqueue.
    State in buffers (saved, restored on resume): the queue (`queue.features`, `queue.pointer`).

    BatchNorm: the original shuffles the keys' batch across GPUs ("shuffle BN") so that a query and its key never
    share batch statistics. On one process the key encoder's BatchNorm runs as is (as the original on one GPU); on
    several processes the equivalent remedy is SyncBatchNorm over the global batch (`train.sync_batchnorm: true`),
    the choice of MoCo v3 and SimCLR. ViT backbones have no BatchNorm.
    """

    def __init__(self, config: MoCoConfig):
        super().__init__(config)
        self.moco = MoCoModel(config)
        self.projector = ProjectionMLP(
            config.hidden_size,
            config.projection_hidden_dim,
            config.projection_dim,
            num_layers=config.projection_num_layers,
            use_bn=config.projection_use_bn,
        )
        self.queue = FeatureQueue(config.queue_size, config.projection_dim)
        self.post_init()
        # The key encoder starts equal to the (initialised) query encoder.
        self.key_encoder = make_teacher(self.moco)
        self.key_projector = make_teacher(self.projector)
        self._pending_keys: list[torch.Tensor] = []
        self.freeze_untrained_parameters()

    def freeze_untrained_parameters(self) -> None:
        """The key encoder follows the query encoder by EMA only."""
        self.key_encoder.requires_grad_(False)
        self.key_projector.requires_grad_(False)

    def forward(self, global_views: torch.Tensor, **kwargs) -> SSLPreTrainingOutput:
        """InfoNCE of q = query encoder(view 1) against k = key encoder(view 2) and the queue; `global_views` is
        (2, B, C, H, W). In training mode the (gathered) keys wait for `on_step_end` to enter the queue."""
        check_two_views(global_views, "MoCo")
        q = self.projector(self.moco(global_views[0]).pooler_output)
        with torch.no_grad():
            k = self.key_projector(self.key_encoder(global_views[1]).pooler_output)
        loss = moco_loss(q, k, self.queue.features, self.config.temperature)
        if self.training:
            keys = F.normalize(k, dim=-1)
            self._pending_keys.append(gather_no_grad(keys) if self.config.gather_distributed else keys)
        with torch.no_grad():
            logs = {"loss": loss.detach(), "positive_cosine": F.cosine_similarity(q, k, dim=-1).mean()}
        return SSLPreTrainingOutput(loss=loss, logs=logs, embeddings=q.detach())

    def on_step_end(self, progress) -> None:
        """Momentum update of the key encoder, then enqueue the keys of the step (all its micro-batches)."""
        ema_update_(self.key_encoder, self.moco, self.config.momentum)
        ema_update_(self.key_projector, self.projector, self.config.momentum)
        if self._pending_keys:
            self.queue.enqueue(torch.cat(self._pending_keys))
            self._pending_keys.clear()
