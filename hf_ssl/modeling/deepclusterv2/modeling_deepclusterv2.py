"""DeepCluster v2 models. `DeepClusterV2Model` is the encoder the paper evaluates (head, prototypes and memory are
discarded)."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel, SSLPreTrainingOutput
from ..clustering import spherical_kmeans
from ..heads import ClusterPrototypes, ProjectionMLP
from ..losses import deepcluster_loss
from ..memory import FeatureQueue
from .configuration_deepclusterv2 import DeepClusterV2Config

NUM_ASSIGNING_CROPS = 2  # the two global crops (`crops_for_assign 0 1`)


class DeepClusterV2PreTrainedModel(SSLPreTrainedModel):
    config_class = DeepClusterV2Config
    base_model_prefix = "deepclusterv2"


class DeepClusterV2Model(SSLModel, DeepClusterV2PreTrainedModel):
    """DeepCluster v2 feature extractor: global average pool (ResNet), CLS token (ViT)."""


class DeepClusterV2ForImageClassification(SSLForImageClassification, DeepClusterV2PreTrainedModel):
    """DeepCluster v2 encoder with a linear classifier on `pooler_output`."""

    model_class = DeepClusterV2Model


class DeepClusterV2ForPreTraining(DeepClusterV2PreTrainedModel):
    """DeepCluster v2: every crop is encoded (`deepclusterv2`), projected (`projector`) and L2-normalised to z, and
    classified by each set of prototypes (`prototypes`, the k-means centroids of the last epoch, never trained: the
    paper's 300k frozen iterations outlast its 800 epochs) with a softmax at temperature tau; all crops of an image
    learn to predict its cluster.

    The projections of the two global crops fill a memory bank (`memory`, registered buffers). At the end of every
    epoch, spherical k-means on the memory (set h clusters the bank of global crop h mod 2) gives the prototypes of
    the next epoch; a cluster left empty is re-seeded with a random projection.

    Targets: the batches carry no dataset index (the pretraining contract), so the original's table of per-image
    assignments from the last k-means cannot be looked up. An image's cluster is instead the k-means E step applied
    to its assigning crop now: the nearest of the epoch's fixed centroids to that crop's current projection. During
    the first epoch, before any k-means, the prototypes are random unit vectors.

    Step hook `on_step_end`: k-means at the end of each epoch (`progress.step + 1` a multiple of
    `progress.steps_per_epoch`).
    """

    def __init__(self, config: DeepClusterV2Config):
        super().__init__(config)
        self.deepclusterv2 = DeepClusterV2Model(config)
        self.projector = ProjectionMLP(
            config.hidden_size, config.projection_hidden_dim, config.projection_dim, num_layers=2, use_bn=True
        )
        self.prototypes = nn.ModuleList(ClusterPrototypes(config.projection_dim, k) for k in config.num_prototypes)
        self.memory = nn.ModuleList(
            FeatureQueue(config.memory_size, config.projection_dim) for _ in range(NUM_ASSIGNING_CROPS)
        )
        self.register_buffer("memory_count", torch.zeros((), dtype=torch.long))
        self.post_init()
        self.freeze_untrained_parameters()

    def freeze_untrained_parameters(self) -> None:
        """The prototypes are set by k-means, not by the optimizer."""
        self.prototypes.requires_grad_(False)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:
            init.zeros_(self.memory_count)

    def forward(
        self, global_views: torch.Tensor, local_views: torch.Tensor | None = None, **kwargs
    ) -> SSLPreTrainingOutput:
        """DeepCluster v2 loss over `global_views` (2, B, C, H, W) and `local_views` (V_l, B, C, h, w) or None; one
        encoder pass per resolution, one head pass over every crop."""
        if global_views.ndim != 5 or global_views.shape[0] != NUM_ASSIGNING_CROPS:
            raise ValueError(
                f"DeepCluster v2 takes global_views of shape (2, batch, C, H, W), got {tuple(global_views.shape)}"
            )
        batch_size = global_views.shape[1]
        if local_views is not None and (local_views.ndim != 5 or local_views.shape[1] != batch_size):
            raise ValueError(f"local_views must be (views, {batch_size}, C, h, w), got {tuple(local_views.shape)}")
        features = [self.deepclusterv2(global_views.flatten(0, 1)).pooler_output]
        if local_views is not None:
            features.append(self.deepclusterv2(local_views.flatten(0, 1)).pooler_output)
        z = F.normalize(self.projector(torch.cat(features)), dim=-1)
        scores = [prototypes(z).unflatten(0, (-1, batch_size)) for prototypes in self.prototypes]
        z = z.unflatten(0, (-1, batch_size))
        with torch.no_grad():
            targets = [head_scores[h % NUM_ASSIGNING_CROPS].argmax(dim=-1) for h, head_scores in enumerate(scores)]
        loss = deepcluster_loss(scores, targets, self.config.temperature)
        with torch.no_grad():
            clusters_used = [F.one_hot(t, s.shape[-1]).amax(0).sum() for t, s in zip(targets, scores)]
            logs = {"loss": loss.detach(), "clusters_in_batch": torch.stack(clusters_used).float().mean()}
        if self.training:
            for bank, crop_z in zip(self.memory, z):
                bank.enqueue(crop_z)
            self.memory_count.add_(batch_size)
        return SSLPreTrainingOutput(loss=loss, logs=logs, embeddings=z[0].detach())

    @torch.no_grad()
    def cluster_memory(self) -> None:
        """k-means on the filled part of the memory; the centroids become the prototypes."""
        filled = min(int(self.memory_count), self.config.memory_size)
        for h, prototypes in enumerate(self.prototypes):
            if filled < prototypes.weight.shape[0]:
                continue  # not enough projections yet to draw the initial centroids
            embeddings = self.memory[h % NUM_ASSIGNING_CROPS].features[:filled]
            centroids, _ = spherical_kmeans(embeddings, prototypes.weight.shape[0], self.config.kmeans_iterations)
            prototypes.weight.copy_(centroids)

    def on_step_end(self, progress) -> None:
        """At the end of every epoch, cluster the memory for the next epoch."""
        if (progress.step + 1) % progress.steps_per_epoch == 0:
            self.cluster_memory()
