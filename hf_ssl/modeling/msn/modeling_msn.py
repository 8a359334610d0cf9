"""MSN models. `MSNModel` is the encoder the paper evaluates: the EMA target encoder, pooled on the CLS token."""

import torch

from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel, SSLPreTrainingOutput
from ..heads import ProjectionMLP, Prototypes
from ..losses import msn_loss
from ..teacher import ema_update_, make_teacher
from .configuration_msn import MSNConfig


class MSNPreTrainedModel(SSLPreTrainedModel):
    config_class = MSNConfig
    base_model_prefix = "msn"


class MSNModel(SSLModel, MSNPreTrainedModel):
    """MSN feature extractor: the CLS token after the final norm."""


class MSNForImageClassification(SSLForImageClassification, MSNPreTrainedModel):
    """MSN encoder with a linear classifier on `pooler_output`."""

    model_class = MSNModel


def keep_indices_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """(B, N) bool masks (True = dropped) -> (B, n_keep) indices of kept patches in patch order, n_keep the smallest
    number of kept patches of a row (the random generator masks the same number in every row)."""
    order = torch.argsort(masks.to(torch.int8), dim=1, stable=True)
    num_keep = int((~masks).sum(dim=1).min())
    return order[:, :num_keep].sort(dim=1).values


def random_keep_indices(batch_size: int, num_patches: int, mask_ratio: float, device) -> torch.Tensor:
    """Indices of `round((1 - mask_ratio) N)` uniformly drawn patches per image, in patch order."""
    num_keep = max(1, int(round((1.0 - mask_ratio) * num_patches)))
    noise = torch.rand(batch_size, num_patches, device=device)
    return noise.argsort(dim=1)[:, :num_keep].sort(dim=1).values


class MSNForPreTraining(MSNPreTrainedModel):
    """MSN (Assran et al., 2022): the anchor views, with patches dropped (not replaced by a mask token), must
    predict the prototype assignment of the unmasked target view.

    Global view 0 is the target view: the target encoder (`msn`, an EMA of the anchor encoder, the `MSNModel`
    that `AutoModel` loads) and the target head (EMA of `projector`) give its sharpened distribution over the
    prototypes. Global views 1.. (dropped patches from `masks`, or `mask_ratio` at random) and the local (focal)
    views (`mask_ratio` at random, drawn here) go through the anchor encoder (`encoder`) and `projector`; their
    distributions over the prototypes (`prototypes`) are trained to the targets with the cross-entropy plus the
    me-max regulariser. Dropped patches are not computed (`keep_indices`), so the anchor's cost grows with the
    kept patches.

    Step hook `on_step_end`: EMA update of the target encoder and head, momentum linear from `momentum_teacher` to 1.
    """

    def __init__(self, config: MSNConfig):
        super().__init__(config)
        self.encoder = MSNModel(config)
        self.projector = ProjectionMLP(
            config.hidden_size, config.projection_hidden_dim, config.projection_dim, num_layers=3,
            use_bn=config.projection_use_bn, activation="gelu",
        )
        self.prototypes = Prototypes(config.projection_dim, config.num_prototypes)
        self.post_init()
        self.msn = make_teacher(self.encoder)
        self.target_projector = make_teacher(self.projector)
        self.freeze_untrained_parameters()

    def freeze_untrained_parameters(self) -> None:
        self.msn.requires_grad_(False)
        self.target_projector.requires_grad_(False)

    def momentum_at_step(self, step: int, total_steps: int) -> float:
        """m: linear from `momentum_teacher` (step 0) to 1 (`total_steps`), as the original's scheduler."""
        if total_steps <= 0:
            return 1.0
        start = self.config.momentum_teacher
        return start + min(max(step, 0), total_steps) * (1.0 - start) / total_steps

    def anchor_features(self, views: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        """CLS features of (V * B, C, H, W) anchor crops with their dropped patches removed."""
        patch_size = self.config.backbone_config.patch_size
        num_patches = (views.shape[-2] // patch_size) * (views.shape[-1] // patch_size)
        if masks is None:
            keep = random_keep_indices(views.shape[0], num_patches, self.config.mask_ratio, views.device)
        else:
            keep = keep_indices_from_masks(masks)
        return self.encoder(views, keep_indices=keep).pooler_output

    def forward(
        self,
        global_views: torch.Tensor,
        local_views: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        **kwargs,
    ) -> SSLPreTrainingOutput:
        """`global_views` (V_g >= 2, B, C, H, W): view 0 the target, the others anchors; `local_views`
        (V_l, B, C, h, w) focal anchors or None; `masks` (V_g, B, N) bool or None (the anchors' dropped patches;
        view 0's mask is ignored)."""
        if global_views.ndim != 5 or global_views.shape[0] < 2:
            raise ValueError(
                f"MSN takes global_views (views >= 2, batch, C, H, W): view 0 is the target, the others anchors; "
                f"got {tuple(global_views.shape)}"
            )
        batch_size = global_views.shape[1]
        if local_views is not None and (local_views.ndim != 5 or local_views.shape[1] != batch_size):
            raise ValueError(f"local_views must be (views, {batch_size}, C, h, w), got {tuple(local_views.shape)}")
        if masks is not None and masks.shape[:2] != global_views.shape[:2]:
            raise ValueError(f"masks {tuple(masks.shape)} do not match global_views {tuple(global_views.shape[:2])}")

        features = [self.anchor_features(global_views[1:].flatten(0, 1),
                                         None if masks is None else masks[1:].flatten(0, 1))]
        if local_views is not None:
            features.append(self.anchor_features(local_views.flatten(0, 1), None))
        anchor_logits = self.prototypes(self.projector(torch.cat(features))).unflatten(0, (-1, batch_size))
        with torch.no_grad():
            target = self.target_projector(self.msn(global_views[0]).pooler_output)
            target_logits = self.prototypes(target)
        config = self.config
        loss, cross_entropy, regulariser = msn_loss(
            anchor_logits, target_logits, anchor_temp=config.temperature,
            target_temp=config.temperature * config.target_sharpen_temp, me_max_weight=config.me_max_weight,
            sinkhorn_iterations=config.sinkhorn_iterations,
        )
        logs = {"loss": loss.detach(), "cross_entropy": cross_entropy.detach(), "me_max": regulariser.detach()}
        return SSLPreTrainingOutput(loss=loss, logs=logs, embeddings=target.detach())

    def on_step_end(self, progress) -> None:
        """EMA update of the target encoder and head with this step's momentum."""
        momentum = self.momentum_at_step(progress.step, progress.total_steps)
        ema_update_(self.msn, self.encoder, momentum)
        ema_update_(self.target_projector, self.projector, momentum)
