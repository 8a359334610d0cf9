"""DINO models. `DinoModel` is the encoder the paper evaluates: the teacher, pooled on the CLS token."""

import torch
from transformers import initialization as init

from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel, SSLPreTrainingOutput
from ..heads import DinoHead
from ..losses import dino_batch_center, dino_loss, dino_teacher_probs
from ..teacher import cosine_schedule, ema_update_, make_teacher
from .configuration_dino import DinoConfig


class DinoPreTrainedModel(SSLPreTrainedModel):
    config_class = DinoConfig
    base_model_prefix = "dino"


class DinoModel(SSLModel, DinoPreTrainedModel):
    """DINO feature extractor: CLS token after the final norm (ViT), global average pool (ResNet)."""


class DinoForImageClassification(SSLForImageClassification, DinoPreTrainedModel):
    """DINO encoder with a linear classifier on `pooler_output`."""

    model_class = DinoModel


class DinoForPreTraining(DinoPreTrainedModel):
    """DINO self-distillation (Caron et al., 2021).

    The student (`student` encoder + `student_head`) sees every crop; the teacher (`dino`, the `DinoModel` that
    `AutoModel` loads, + `teacher_head`) sees the global crops and is an EMA of the student. The student learns to
    match the teacher's centred, sharpened distribution over K prototypes on every other crop.

    Step hooks (called by the engine with the training progress):
        `on_before_optimizer_step`: drop the gradients of the student head's last layer for the first
            `freeze_last_layer_epochs` epochs.
        `on_step_end`: EMA update of the teacher with the cosine momentum schedule, then set the teacher
            temperature and momentum of the next step.
    Method state in buffers (saved with the model, restored on resume): `center` (1, K) and
    `teacher_temperature`.
    """

    def __init__(self, config: DinoConfig):
        super().__init__(config)
        self.student = DinoModel(config)
        self.student_head = DinoHead(
            config.hidden_size,
            config.head_out_dim,
            hidden_dim=config.head_hidden_dim,
            bottleneck_dim=config.head_bottleneck_dim,
            num_layers=config.head_num_layers,
            use_bn=config.head_use_bn,
            norm_last_layer=config.norm_last_layer,
        )
        self.register_buffer("center", torch.zeros(1, config.head_out_dim))
        self.register_buffer("teacher_temperature", torch.tensor(self.teacher_temp_at_epoch(0)))
        self.register_buffer("teacher_momentum", torch.tensor(config.momentum_teacher), persistent=False)
        self.post_init()
        # The teacher starts equal to the (initialised) student.
        self.dino = make_teacher(self.student)
        self.teacher_head = make_teacher(self.student_head)
        self.freeze_untrained_parameters()

    def freeze_untrained_parameters(self) -> None:
        """The teacher follows the student by EMA only; with `norm_last_layer`, the norms g of the student head's
        last layer stay 1."""
        self.dino.requires_grad_(False)
        self.teacher_head.requires_grad_(False)
        self.student_head.weight_g.requires_grad_(not self.config.norm_last_layer)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:
            init.zeros_(self.center)
            init.constant_(self.teacher_temperature, self.teacher_temp_at_epoch(0))
            init.constant_(self.teacher_momentum, self.config.momentum_teacher)

    def teacher_temp_at_epoch(self, epoch: int) -> float:
        """tau_t: linear from `warmup_teacher_temp` (epoch 0) to `teacher_temp` (epoch
        `warmup_teacher_temp_epochs - 1`), then constant, per epoch as the original's `np.linspace` schedule."""
        config = self.config
        warmup_epochs = config.warmup_teacher_temp_epochs
        if epoch >= warmup_epochs:
            return config.teacher_temp
        fraction = epoch / (warmup_epochs - 1) if warmup_epochs > 1 else 0.0
        return config.warmup_teacher_temp + fraction * (config.teacher_temp - config.warmup_teacher_temp)

    def momentum_at_step(self, step: int, total_steps: int) -> float:
        """The teacher's EMA momentum: cosine from `momentum_teacher` to 1 over the training."""
        return cosine_schedule(self.config.momentum_teacher, 1.0, step, total_steps)

    def forward(
        self, global_views: torch.Tensor, local_views: torch.Tensor | None = None, **kwargs
    ) -> SSLPreTrainingOutput:
        """Multi-crop DINO loss. `global_views` (V_g, B, C, H, W), `local_views` (V_l, B, C, h, w) or None; one
        encoder pass per resolution, one head pass over all crops (as the original, BatchNorm heads see them all)."""
        if global_views.ndim != 5 or (local_views is not None and local_views.ndim != 5):
            raise ValueError("global_views and local_views must be (views, batch, channels, height, width)")
        num_global, batch_size = global_views.shape[:2]
        if local_views is not None and local_views.shape[1] != batch_size:
            raise ValueError(f"local_views has batch {local_views.shape[1]}, global_views {batch_size}")
        global_flat = global_views.flatten(0, 1)

        features = [self.student(global_flat).pooler_output]
        if local_views is not None:
            features.append(self.student(local_views.flatten(0, 1)).pooler_output)
        student_logits = self.student_head(torch.cat(features)).unflatten(0, (-1, batch_size))
        with torch.no_grad():
            teacher_logits = self.teacher_head(self.dino(global_flat).pooler_output)
            teacher_logits = teacher_logits.unflatten(0, (num_global, batch_size))

        loss = dino_loss(
            student_logits, teacher_logits, self.center, self.config.student_temp, self.teacher_temperature
        )
        with torch.no_grad():
            teacher_probs = dino_teacher_probs(teacher_logits, self.center, self.teacher_temperature)
            teacher_entropy = torch.special.entr(teacher_probs).sum(-1).mean()
            logs = {
                "loss": loss.detach(),
                "teacher_temp": self.teacher_temperature.detach().clone(),
                "momentum": self.teacher_momentum.detach().clone(),
                "teacher_entropy": teacher_entropy,
                # every teacher view is paired with the same number of student views, so the mean KL over the
                # pairs is the mean cross-entropy minus the mean teacher entropy
                "teacher_student_kl": loss.detach() - teacher_entropy,
            }
        if self.training:
            self.update_center(teacher_logits)
        return SSLPreTrainingOutput(loss=loss, logs=logs, embeddings=features[0][:batch_size].detach())

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """c <- m c + (1 - m) * mean of the teacher outputs over the global batch (all views, all processes)."""
        self.center.lerp_(dino_batch_center(teacher_logits), 1.0 - self.config.center_momentum)

    def on_before_optimizer_step(self, progress) -> None:
        """Keep the last head layer fixed during the first `freeze_last_layer_epochs` epochs (no gradient, so
        the optimizer skips it, weight decay included)."""
        if progress.step // progress.steps_per_epoch < self.config.freeze_last_layer_epochs:
            for parameter in self.student_head.last_layer.parameters():
                parameter.grad = None

    def on_step_end(self, progress) -> None:
        """EMA update of the teacher (backbone and head) with the momentum of this step (`progress.step`, the index
        of the step just taken), then the temperature and momentum of the next step."""
        momentum = self.momentum_at_step(progress.step, progress.total_steps)
        ema_update_(self.dino, self.student, momentum)
        ema_update_(self.teacher_head, self.student_head, momentum)
        next_epoch = (progress.step + 1) // progress.steps_per_epoch
        self.teacher_temperature.fill_(self.teacher_temp_at_epoch(next_epoch))
        self.teacher_momentum.fill_(self.momentum_at_step(progress.step + 1, progress.total_steps))
