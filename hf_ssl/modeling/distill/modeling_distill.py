"""Distillation models. `DistillModel` is the model DINOv2 keeps: the EMA of the distilled student."""

import json

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel
from ..dinov2_ssl.modeling_dinov2_ssl import Dinov2SSLForPreTraining
from ..heads import DinoHead
from ..teacher import ema_update_, make_teacher
from .configuration_distill import DistillConfig

# pretraining models whose checkpoints hold teacher heads DINOv2's distillation can reuse
MODELS_WITH_TEACHER_HEADS = ("dino", "ibot", "dinov2_ssl")


class DistillPreTrainedModel(SSLPreTrainedModel):
    config_class = DistillConfig
    base_model_prefix = "distill"


class DistillModel(SSLModel, DistillPreTrainedModel):
    """The distilled student (its EMA) as a feature extractor: the CLS token after the final norm."""


class DistillForImageClassification(SSLForImageClassification, DistillPreTrainedModel):
    """The distilled student with a linear classifier on `pooler_output`."""

    model_class = DistillModel


def checkpoint_keys(name_or_path: str) -> set[str]:
    """The tensor names of a safetensors checkpoint (folder or cached Hub id; single file or sharded)."""
    index = cached_file(name_or_path, SAFE_WEIGHTS_INDEX_NAME, _raise_exceptions_for_missing_entries=False)
    if index is not None:
        with open(index) as file:
            return set(json.load(file)["weight_map"])
    weights = cached_file(name_or_path, SAFE_WEIGHTS_NAME, _raise_exceptions_for_missing_entries=False)
    if weights is None:
        return set()
    with safe_open(weights, framework="pt") as file:
        return set(file.keys())


def _building_on_meta_device() -> bool:
    """Whether `transformers` is building the model on the meta device (`from_pretrained`): the weights, the
    teacher's included, then come from the checkpoint being loaded."""
    return torch.empty(0).device.type == "meta"


class DistillForPreTraining(DistillPreTrainedModel, Dinov2SSLForPreTraining):
    """DINOv2-style distillation: a frozen teacher (`teacher`, in eval mode, with `teacher_head` and
    `teacher_patch_head`) makes the targets; the student (`student` + heads) learns them with DINOv2's losses
    (DINO across views and crops, iBOT on every patch of the global crops unless the batch brings `masks`, KoLeo),
    and its EMA (`distill`, the `DistillModel` that `AutoModel` loads) is the final model.

    The teacher's weights are part of this model's checkpoints (so training resumes without the teacher's files).
    Its features: `pooler_output` for hf_ssl models, the first token of `last_hidden_state` for other
    `transformers` models; its patch tokens are the last N tokens, so teacher and student must share the patch grid.
    """

    def build_teacher(self) -> None:
        """The student's EMA, and the frozen teacher with its heads (loaded, or built from the config when
        `from_pretrained` restores this model)."""
        self.distill = make_teacher(self.student)
        config = self.config
        if config.teacher_config is None:
            if config.teacher_name_or_path is None:
                raise ValueError("distillation needs a teacher: set teacher_name_or_path (or teacher_config)")
            config.teacher_config = AutoConfig.from_pretrained(config.teacher_name_or_path).to_dict()
        teacher_config = AutoConfig.for_model(**config.teacher_config)
        if config.teacher_heads is None:
            config.teacher_heads = (
                config.teacher_name_or_path is not None
                and teacher_config.model_type in MODELS_WITH_TEACHER_HEADS
                and any(key.startswith("teacher_head.") for key in checkpoint_keys(config.teacher_name_or_path))
            )
        load = config.teacher_name_or_path is not None and not _building_on_meta_device()
        if config.teacher_heads:
            if load:
                pretraining = AutoModelForPreTraining.from_pretrained(config.teacher_name_or_path)
                teacher = getattr(pretraining, pretraining.base_model_prefix)
                head, patch_head = pretraining.teacher_head, getattr(pretraining, "teacher_patch_head", None)
            else:
                teacher = AutoModel.from_config(teacher_config)
                head = DinoHead(teacher_config.hidden_size, teacher_config.head_out_dim,
                                **self._head_shape(teacher_config))
                patch_head = None
                if not getattr(teacher_config, "shared_head", True):
                    patch_head = DinoHead(teacher_config.hidden_size, teacher_config.patch_out_dim,
                                          **self._head_shape(teacher_config))
            self._check_head_dims(head, patch_head)
        else:
            teacher = (AutoModel.from_pretrained(config.teacher_name_or_path) if load
                       else AutoModel.from_config(teacher_config))
            width = self._feature_width(teacher_config)
            head = self.make_head(width, config.head_out_dim)
            patch_head = None if config.shared_head else self.make_head(width, config.patch_out_dim)
        self._check_patch_grid(teacher_config)
        self.teacher, self.teacher_head, self.teacher_patch_head = teacher.eval(), head.eval(), patch_head
        if patch_head is not None:
            patch_head.eval()

    @staticmethod
    def _head_shape(config) -> dict:
        return dict(hidden_dim=config.head_hidden_dim, bottleneck_dim=config.head_bottleneck_dim,
                    num_layers=config.head_num_layers, use_bn=config.head_use_bn)

    @staticmethod
    def _feature_width(teacher_config) -> int:
        width = getattr(teacher_config, "hidden_size", None)
        if not isinstance(width, int):
            raise ValueError(f"cannot tell the feature width of the teacher ({teacher_config.model_type})")
        return width

    def _check_head_dims(self, head, patch_head) -> None:
        config = self.config
        patch_dim = (patch_head or head).last_layer.out_features
        if head.last_layer.out_features != config.head_out_dim or patch_dim != config.patch_out_dim:
            raise ValueError(
                f"the teacher's heads have {head.last_layer.out_features} / {patch_dim} prototypes: set head_out_dim "
                f"and patch_out_dim to match (got {config.head_out_dim} / {config.patch_out_dim})"
            )

    def _check_patch_grid(self, teacher_config) -> None:
        teacher_backbone = getattr(teacher_config, "backbone_config", teacher_config)
        teacher_patch = getattr(teacher_backbone, "patch_size", None)
        student_patch = self.config.backbone_config.patch_size
        if isinstance(teacher_patch, int) and teacher_patch != student_patch:
            raise ValueError(f"the teacher's patch size {teacher_patch} differs from the student's {student_patch}: "
                             "the patch loss pairs their patch tokens")

    @property
    def teacher_encoder(self):
        return self.teacher

    def freeze_untrained_parameters(self) -> None:
        """Teacher and heads frozen, the student's EMA moved by the hook only."""
        for module in (self.teacher, self.teacher_head, self.teacher_patch_head, self.distill):
            if module is not None:
                module.requires_grad_(False)
        for head in self.student_heads:
            head.weight_g.requires_grad_(not self.config.norm_last_layer)

    def train(self, mode: bool = True):
        """The teacher and its heads stay in eval mode."""
        super().train(mode)
        for module in (getattr(self, name, None) for name in ("teacher", "teacher_head", "teacher_patch_head")):
            if module is not None:
                module.eval()
        return self

    def patch_loss_masks(self, masks, num_images: int, num_patches: int, device):
        """DINOv2's distillation has no masking: the patch loss covers every patch of the global crops."""
        if masks is not None:
            return masks
        return torch.ones(num_images, num_patches, dtype=torch.bool, device=device)

    def teacher_features(self, pixel_values: torch.Tensor, num_patches: int) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.teacher(pixel_values)
        hidden = outputs.last_hidden_state
        cls = outputs.pooler_output if isinstance(self.teacher, SSLModel) else hidden[:, 0]
        return cls, hidden[:, -num_patches:]

    def ema_update(self, momentum: float) -> None:
        """The spare EMA of the student (the final model); the teacher never changes."""
        ema_update_(self.distill, self.student, momentum)
