"""SwAV models. `SwAVModel` is the encoder the paper evaluates (the projection head and prototypes are discarded)."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel, SSLPreTrainingOutput
from ..heads import ClusterPrototypes, ProjectionMLP
from ..losses import sinkhorn_knopp, swav_loss
from ..memory import FeatureQueue
from .configuration_swav import SwAVConfig


class SwAVPreTrainedModel(SSLPreTrainedModel):
    config_class = SwAVConfig
    base_model_prefix = "swav"


class SwAVModel(SSLModel, SwAVPreTrainedModel):
    """SwAV feature extractor: global average pool (ResNet), CLS token (ViT)."""


class SwAVForImageClassification(SSLForImageClassification, SwAVPreTrainedModel):
    """SwAV encoder with a linear classifier on `pooler_output`."""

    model_class = SwAVModel


class SwAVForPreTraining(SwAVPreTrainedModel):
    """SwAV (Caron et al., 2020): every crop is encoded (`swav`), projected (`projector`) and L2-normalised to z and
    scored against K unit-norm prototypes (`prototypes`). The codes q of the two global crops are computed online by
    Sinkhorn-Knopp over the (global) batch, which splits the batch equally between the prototypes; every other crop
    predicts them (swapped prediction).

    Step hooks:
        `on_before_optimizer_step`: no update of the prototypes during the first `freeze_prototypes_epochs`.
        `on_step_end`: renormalise the prototypes, record the epoch of the next step (for the queue).
    Method state in buffers: `queues` (one per global crop, when `queue_length` > 0), `queue_count` (embeddings
    queued so far) and `epoch`.
    """

    def __init__(self, config: SwAVConfig):
        super().__init__(config)
        self.swav = SwAVModel(config)
        self.projector = ProjectionMLP(
            config.hidden_size, config.projection_hidden_dim, config.projection_dim, num_layers=2, use_bn=True
        )
        self.prototypes = ClusterPrototypes(config.projection_dim, config.num_prototypes)
        self.queues = None
        if config.queue_length > 0:
            self.queues = nn.ModuleList(FeatureQueue(config.queue_length, config.projection_dim) for _ in range(2))
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:
            init.zeros_(self.queue_count)
            init.zeros_(self.epoch)

    def forward(
        self, global_views: torch.Tensor, local_views: torch.Tensor | None = None, **kwargs
    ) -> SSLPreTrainingOutput:
        """SwAV loss over `global_views` (V_g, B, C, H, W) (the assigning crops) and `local_views` (V_l, B, C, h, w)
        or None; one encoder pass per resolution, one head pass over every crop (BatchNorm sees them all, as the
        original)."""
        if global_views.ndim != 5 or (local_views is not None and local_views.ndim != 5):
            raise ValueError("global_views and local_views must be (views, batch, channels, height, width)")
        num_global, batch_size = global_views.shape[:2]
        if local_views is not None and local_views.shape[1] != batch_size:
            raise ValueError(f"local_views has batch {local_views.shape[1]}, global_views {batch_size}")
        if self.queues is not None and num_global > len(self.queues):
            raise ValueError(f"the queue holds {len(self.queues)} assigning crops, got {num_global} global views")
        features = [self.swav(global_views.flatten(0, 1)).pooler_output]
        if local_views is not None:
            features.append(self.swav(local_views.flatten(0, 1)).pooler_output)
        z = F.normalize(self.projector(torch.cat(features)), dim=-1)
        scores = self.prototypes(z).unflatten(0, (-1, batch_size))  # (V, B, K)
        z = z.unflatten(0, (-1, batch_size))
        if scores.shape[0] < 2:
            raise ValueError("SwAV needs at least two crops to swap their assignments")

        use_queue = self.queue_is_full()
        codes = torch.stack([self.codes(scores[crop], crop, use_queue) for crop in range(num_global)])
        loss = swav_loss(scores, codes, self.config.temperature)
        with torch.no_grad():
            logs = {
                "loss": loss.detach(),
                # how confidently the codes pick a prototype, and how many prototypes the batch uses
                "code_entropy": torch.special.entr(codes).sum(-1).mean(),
                "prototypes_used": F.one_hot(codes.argmax(-1), self.config.num_prototypes).amax((0, 1)).sum().float(),
            }
        if self.training and self.queues is not None:
            self.enqueue(z[:num_global])
        return SSLPreTrainingOutput(loss=loss, logs=logs, embeddings=z[0].detach())

    @torch.no_grad()
    def codes(self, scores: torch.Tensor, crop: int, use_queue: bool = False) -> torch.Tensor:
        """The codes q (B, K) of one assigning crop: Sinkhorn-Knopp over its scores (B, K), preceded by those of its
        queue with `use_queue` (the queue only enlarges the batch that is split between the prototypes)."""
        batch_size = scores.shape[0]
        scores = scores.detach()
        if use_queue:
            scores = torch.cat([self.queues[crop].features.to(scores.dtype) @ self.prototypes.weight.T.to(scores.dtype),
                                scores])  # fmt: skip
        config = self.config
        codes = sinkhorn_knopp(scores, config.sinkhorn_epsilon, config.sinkhorn_iterations, config.gather_distributed)
        return codes[-batch_size:]

    def queue_is_full(self) -> bool:
        """Whether the queue holds `queue_length` embeddings (reads a buffer: one host sync, only with a queue)."""
        return self.queues is not None and int(self.queue_count) >= self.config.queue_length

    @torch.no_grad()
    def enqueue(self, z: torch.Tensor) -> None:
        """Queue the embeddings of the assigning crops (V_g, B, D) from `queue_start_epoch` on."""
        if int(self.epoch) < self.config.queue_start_epoch:
            return
        for queue, crop_z in zip(self.queues, z):
            queue.enqueue(crop_z)
        self.queue_count.add_(z.shape[1])

    def on_before_optimizer_step(self, progress) -> None:
        """Keep the prototypes fixed during the first `freeze_prototypes_epochs` epochs."""
        if progress.step < self.config.freeze_prototypes_epochs * progress.steps_per_epoch:
            self.prototypes.weight.grad = None

    def on_step_end(self, progress) -> None:
        """Unit-norm prototypes for the next step; the epoch the next step belongs to."""
        self.prototypes.normalize_()
        self.epoch.fill_((progress.step + 1) // progress.steps_per_epoch)
