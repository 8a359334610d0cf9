"""DINOv2 models. `Dinov2SSLModel` is the encoder the paper evaluates: the EMA teacher, pooled on the CLS token
after the final norm (`x_norm_clstoken`); register tokens are never pooled."""

import torch

from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel
from ..ibot.modeling_ibot import IBOTForPreTraining
from ..losses import koleo_loss, sinkhorn_knopp_teacher_probs
from .configuration_dinov2_ssl import Dinov2SSLConfig


class Dinov2SSLPreTrainedModel(SSLPreTrainedModel):
    config_class = Dinov2SSLConfig
    base_model_prefix = "dinov2"


class Dinov2SSLModel(SSLModel, Dinov2SSLPreTrainedModel):
    """DINOv2 feature extractor: the CLS token after the final norm."""


class Dinov2SSLForImageClassification(SSLForImageClassification, Dinov2SSLPreTrainedModel):
    """DINOv2 encoder with a linear classifier on `pooler_output`."""

    model_class = Dinov2SSLModel


class Dinov2SSLForPreTraining(Dinov2SSLPreTrainedModel, IBOTForPreTraining):
    """DINOv2 (Oquab et al., 2023): iBOT's training (DINO [CLS] loss across views + masked-patch loss, EMA teacher
    `dinov2` = the `Dinov2SSLModel` that `AutoModel` loads) with separate DINO and iBOT heads, Sinkhorn-Knopp
    centering of the teacher outputs and the KoLeo regulariser:
    L = L_DINO + L_iBOT + w_koleo * sum over the global crops of KoLeo(student CLS tokens of that crop).
    """

    model_class = Dinov2SSLModel

    def teacher_targets(self, logits: torch.Tensor, center: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """Sinkhorn-Knopp assignments over every row of the global batch (DINOv2's `sinkhorn_knopp_teacher`), or
        the centred softmax with `centering="centering"`."""
        if self.config.centering == "centering":
            return super().teacher_targets(logits, center, temperature)
        probs = sinkhorn_knopp_teacher_probs(logits.flatten(0, -2), temperature, self.config.sinkhorn_iterations)
        return probs.view_as(logits)

    @torch.no_grad()
    def update_centers(self, teacher_cls_logits: torch.Tensor, teacher_patch_logits: torch.Tensor) -> None:
        if self.config.centering == "centering":
            super().update_centers(teacher_cls_logits, teacher_patch_logits)

    def extra_loss(self, student_global_cls: torch.Tensor, num_global: int, logs: dict) -> torch.Tensor | None:
        """KoLeo on the student's CLS tokens (backbone output, before the head), per global crop, summed as DINOv2."""
        if self.config.koleo_loss_weight == 0:
            return None
        koleo = sum(koleo_loss(view) for view in student_global_cls.chunk(num_global))
        logs["koleo_loss"] = koleo.detach()
        return self.config.koleo_loss_weight * koleo
