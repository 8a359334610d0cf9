"""iBOT models. `IBOTModel` is the encoder the paper evaluates: the EMA teacher, pooled on the CLS token."""

import torch
from transformers import initialization as init

from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel, SSLPreTrainingOutput
from ..heads import DinoHead
from ..losses import dino_batch_center, dino_cross_entropy, dino_teacher_probs, ibot_patch_loss, mean_over_rows
from ..teacher import cosine_schedule, ema_update_, make_teacher
from .configuration_ibot import IBOTConfig


class IBOTPreTrainedModel(SSLPreTrainedModel):
    config_class = IBOTConfig
    base_model_prefix = "ibot"


class IBOTModel(SSLModel, IBOTPreTrainedModel):
    """iBOT feature extractor: the CLS token after the final norm."""


class IBOTForImageClassification(SSLForImageClassification, IBOTPreTrainedModel):
    """iBOT encoder with a linear classifier on `pooler_output`."""

    model_class = IBOTModel


def check_masked_vit(config) -> None:
    """Masked self-distillation needs our ViT: a mask token (`bool_masked_pos`), patch tokens and a CLS token."""
    backbone = config.backbone_config
    if getattr(backbone, "model_type", None) != "ssl_vit" or not backbone.use_cls_token or backbone.pooling != "cls":
        raise ValueError(
            f"{config.model_type} needs an ssl_vit backbone with a CLS token and pooling='cls', got "
            f"{getattr(backbone, 'model_type', type(backbone).__name__)}"
        )


class IBOTForPreTraining(IBOTPreTrainedModel):
    """iBOT (Zhou et al., 2022): DINO on the [CLS] tokens plus masked image modeling with the teacher as tokenizer.

    The student (`student` + `student_head`, and `student_patch_head` unless `shared_head`) sees the global crops
    with their masked patches replaced by the mask token (`masks`, (V_g, B, N)) and the local crops unmasked. The
    EMA teacher (`ibot`, the `IBOTModel` that `AutoModel` loads, + its heads) sees the unmasked global crops.
    L = lambda_1 L_[CLS] (DINO's cross-view loss) + lambda_2 L_MIM (on each masked patch, the teacher's centred
    and sharpened output on the same patch of the unmasked view is the target of the student's output).

    Only the masked patches go through the heads (as DINOv2; iBOT computes every patch), so the patch centre is
    the mean teacher output over the masked patches of the global batch.

    Step hooks: `on_before_optimizer_step` keeps the heads' last layers fixed for `freeze_last_layer_epochs`;
    `on_step_end` updates the teacher by EMA and sets the next step's temperatures and momentum. Method state in
    buffers: `center`, `patch_center`, `teacher_temperature`, `patch_teacher_temperature`.
    """

    model_class = IBOTModel

    def __init__(self, config: IBOTConfig):
        super().__init__(config)
        check_masked_vit(config)
        self.student = self.model_class(config)
        self.student_head = self.make_head(config.hidden_size, config.head_out_dim)
        self.student_patch_head = (
            None if config.shared_head else self.make_head(config.hidden_size, config.patch_out_dim)
        )
        self.register_buffer("center", torch.zeros(1, config.head_out_dim))
        self.register_buffer("patch_center", torch.zeros(1, config.patch_out_dim))
        self.register_buffer("teacher_temperature", torch.tensor(self.teacher_temps_at_epoch(0)[0]))
        self.register_buffer("patch_teacher_temperature", torch.tensor(self.teacher_temps_at_epoch(0)[1]))
        self.register_buffer("teacher_momentum", torch.tensor(config.momentum_teacher), persistent=False)
        self.post_init()
        self.build_teacher()
        self.freeze_untrained_parameters()

    def make_head(self, in_dim: int, out_dim: int) -> DinoHead:
        config = self.config
        return DinoHead(
            in_dim, out_dim, hidden_dim=config.head_hidden_dim, bottleneck_dim=config.head_bottleneck_dim,
            num_layers=config.head_num_layers, use_bn=config.head_use_bn, norm_last_layer=config.norm_last_layer,
        )

    def build_teacher(self) -> None:
        """The EMA teacher starts equal to the (initialised) student: encoder and heads."""
        setattr(self, self.base_model_prefix, make_teacher(self.student))
        self.teacher_head = make_teacher(self.student_head)
        self.teacher_patch_head = None if self.student_patch_head is None else make_teacher(self.student_patch_head)

    @property
    def teacher_encoder(self):
        """The encoder that makes the targets (here the EMA teacher, the evaluated model)."""
        return getattr(self, self.base_model_prefix)

    @property
    def student_heads(self) -> list[DinoHead]:
        return [head for head in (self.student_head, self.student_patch_head) if head is not None]

    def freeze_untrained_parameters(self) -> None:
        """The teacher follows the student by EMA only; with `norm_last_layer` the heads' norms g stay 1."""
        self.teacher_encoder.requires_grad_(False)
        for head in (self.teacher_head, self.teacher_patch_head):
            if head is not None:
                head.requires_grad_(False)
        for head in self.student_heads:
            head.weight_g.requires_grad_(not self.config.norm_last_layer)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:
            init.zeros_(self.center)
            init.zeros_(self.patch_center)
            cls_temp, patch_temp = self.teacher_temps_at_epoch(0)
            init.constant_(self.teacher_temperature, cls_temp)
            init.constant_(self.patch_teacher_temperature, patch_temp)
            init.constant_(self.teacher_momentum, self.config.momentum_teacher)

    def teacher_temps_at_epoch(self, epoch: int) -> tuple[float, float]:
        """(tau_t of the [CLS], tau_t of the patches): linear warm-up per epoch over `warmup_teacher_temp_epochs`
        (DINO's `np.linspace` schedule), then constant."""
        config = self.config
        warmup_epochs = config.warmup_teacher_temp_epochs
        fraction = 1.0 if epoch >= warmup_epochs else (epoch / (warmup_epochs - 1) if warmup_epochs > 1 else 0.0)

        def ramp(start, end):
            return start + fraction * (end - start)

        return (
            ramp(config.warmup_teacher_temp, config.teacher_temp),
            ramp(config.warmup_patch_teacher_temp, config.patch_teacher_temp),
        )

    def momentum_at_step(self, step: int, total_steps: int) -> float:
        """The EMA momentum: cosine from `momentum_teacher` to 1 over the training."""
        return cosine_schedule(self.config.momentum_teacher, 1.0, step, total_steps)

    # ------------------------------------------------------------ the parts subclasses change

    def teacher_targets(self, logits: torch.Tensor, center: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """The teacher's targets: DINO's centred, sharpened softmax."""
        return dino_teacher_probs(logits, center, temperature)

    @torch.no_grad()
    def update_centers(self, teacher_cls_logits: torch.Tensor, teacher_patch_logits: torch.Tensor) -> None:
        """EMA of the mean teacher outputs over the global batch: [CLS] rows, and masked-patch rows (skipped when no
        patch is masked anywhere, without a host sync)."""
        self.center.lerp_(dino_batch_center(teacher_cls_logits), 1.0 - self.config.center_momentum)
        if teacher_patch_logits is None:
            return
        patch_mean, count = mean_over_rows(teacher_patch_logits)
        weight = (count > 0).to(patch_mean.dtype) * (1.0 - self.config.patch_center_momentum)
        self.patch_center.lerp_(patch_mean.to(self.patch_center.dtype), weight.to(self.patch_center.dtype))

    def patch_loss_masks(self, masks: torch.Tensor | None, num_images: int, num_patches: int, device):
        """The patches the patch loss is computed on: the masked ones (None: no patch loss)."""
        return masks

    def extra_loss(self, student_global_cls: torch.Tensor, num_global: int, logs: dict) -> torch.Tensor | None:
        """Regularisers added to the loss (none in iBOT; DINOv2's KoLeo)."""
        return None

    def teacher_features(self, pixel_values: torch.Tensor, num_patches: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(CLS, patch tokens) of the teacher encoder on the unmasked global crops."""
        outputs = self.teacher_encoder(pixel_values)
        return outputs.pooler_output, outputs.last_hidden_state[:, -num_patches:]

    # ------------------------------------------------------------ forward

    def forward(
        self,
        global_views: torch.Tensor,
        local_views: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        **kwargs,
    ) -> SSLPreTrainingOutput:
        """`global_views` (V_g, B, C, H, W), `local_views` (V_l, B, C, h, w) or None, `masks` (V_g, B, N) bool or
        None (True = masked patch of the global crop)."""
        if global_views.ndim != 5 or (local_views is not None and local_views.ndim != 5):
            raise ValueError("global_views and local_views must be (views, batch, channels, height, width)")
        num_global, batch_size = global_views.shape[:2]
        if local_views is not None and local_views.shape[1] != batch_size:
            raise ValueError(f"local_views has batch {local_views.shape[1]}, global_views {batch_size}")
        patch_size = self.config.backbone_config.patch_size
        num_patches = (global_views.shape[-2] // patch_size) * (global_views.shape[-1] // patch_size)
        if masks is not None and (masks.shape != (num_global, batch_size, num_patches) or masks.dtype != torch.bool):
            raise ValueError(
                f"masks must be a bool tensor {(num_global, batch_size, num_patches)} (views, batch, patches), got "
                f"{masks.dtype} {tuple(masks.shape)}"
            )
        global_flat = global_views.flatten(0, 1)
        masks_flat = None if masks is None else masks.flatten(0, 1)

        # student: masked global crops (one pass), unmasked local crops (one pass)
        outputs = self.student(global_flat, bool_masked_pos=masks_flat)
        student_global_cls = outputs.pooler_output
        cls_features = [student_global_cls]
        if local_views is not None:
            cls_features.append(self.student(local_views.flatten(0, 1)).pooler_output)
        cls_features = torch.cat(cls_features)
        loss_masks = self.patch_loss_masks(masks_flat, global_flat.shape[0], num_patches, global_flat.device)
        patch_features = None
        if loss_masks is not None:
            patch_features = outputs.last_hidden_state[:, -num_patches:][loss_masks]
        student_cls_logits, student_patch_logits = self.apply_heads(
            self.student_head, self.student_patch_head, cls_features, patch_features
        )

        with torch.no_grad():
            teacher_cls, teacher_patches = self.teacher_features(global_flat, num_patches)
            teacher_cls_logits, teacher_patch_logits = self.apply_heads(
                self.teacher_head, self.teacher_patch_head, teacher_cls,
                None if loss_masks is None else teacher_patches[loss_masks],
            )  # fmt: skip
            teacher_cls_logits = teacher_cls_logits.unflatten(0, (num_global, batch_size))
            cls_targets = self.teacher_targets(teacher_cls_logits, self.center, self.teacher_temperature)

        config = self.config
        cls_loss = dino_cross_entropy(
            student_cls_logits.unflatten(0, (-1, batch_size)), cls_targets, config.student_temp
        )
        loss = config.cls_loss_weight * cls_loss
        logs = {"cls_loss": cls_loss.detach()}
        if loss_masks is not None:
            with torch.no_grad():
                patch_targets = self.teacher_targets(
                    teacher_patch_logits, self.patch_center, self.patch_teacher_temperature
                )
            patch_loss = ibot_patch_loss(student_patch_logits, patch_targets, loss_masks, config.student_temp)
            loss = loss + config.patch_loss_weight * patch_loss
            logs["patch_loss"] = patch_loss.detach()
            logs["mask_ratio"] = loss_masks.float().mean()
        extra = self.extra_loss(student_global_cls, num_global, logs)
        if extra is not None:
            loss = loss + extra
        with torch.no_grad():
            logs.update(
                loss=loss.detach(),
                teacher_temp=self.teacher_temperature.detach().clone(),
                momentum=self.teacher_momentum.detach().clone(),
                teacher_entropy=torch.special.entr(cls_targets).sum(-1).mean(),
            )
        if self.training:
            self.update_centers(teacher_cls_logits, teacher_patch_logits)
        return SSLPreTrainingOutput(loss=loss, logs=logs, embeddings=student_global_cls[:batch_size].detach())

    @staticmethod
    def apply_heads(cls_head, patch_head, cls_features, patch_features):
        """(CLS logits, patch logits or None); a shared head (no `patch_head`) runs once over both."""
        if patch_features is None:
            return cls_head(cls_features), None
        if patch_head is None:
            logits = cls_head(torch.cat([cls_features, patch_features]))
            return logits[: cls_features.shape[0]], logits[cls_features.shape[0] :]
        return cls_head(cls_features), patch_head(patch_features)

    # ------------------------------------------------------------ step hooks

    def on_before_optimizer_step(self, progress) -> None:
        """Keep the heads' last layers fixed during the first `freeze_last_layer_epochs` epochs."""
        if progress.step // progress.steps_per_epoch < self.config.freeze_last_layer_epochs:
            for head in self.student_heads:
                for parameter in head.last_layer.parameters():
                    parameter.grad = None

    def ema_update(self, momentum: float) -> None:
        """theta_t <- m theta_t + (1 - m) theta_s for the teacher encoder and heads."""
        ema_update_(self.teacher_encoder, self.student, momentum)
        ema_update_(self.teacher_head, self.student_head, momentum)
        if self.teacher_patch_head is not None:
            ema_update_(self.teacher_patch_head, self.student_patch_head, momentum)

    def on_step_end(self, progress) -> None:
        """EMA update with this step's momentum, then the next step's temperatures and momentum."""
        self.ema_update(self.momentum_at_step(progress.step, progress.total_steps))
        cls_temp, patch_temp = self.teacher_temps_at_epoch((progress.step + 1) // progress.steps_per_epoch)
        self.teacher_temperature.fill_(cls_temp)
        self.patch_teacher_temperature.fill_(patch_temp)
        self.teacher_momentum.fill_(self.momentum_at_step(progress.step + 1, progress.total_steps))
