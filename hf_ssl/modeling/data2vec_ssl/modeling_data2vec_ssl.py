"""data2vec (vision) models. `Data2VecSSLModel` is the encoder the paper fine-tunes: the student, pooled on the mean
of its patch tokens."""

import torch
import torch.nn.functional as F

from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel, SSLPreTrainingOutput
from ..heads import ProjectionMLP
from ..losses import data2vec_loss
from ..teacher import ema_update_, make_teacher
from .configuration_data2vec_ssl import Data2VecSSLConfig


class Data2VecSSLPreTrainedModel(SSLPreTrainedModel):
    config_class = Data2VecSSLConfig
    base_model_prefix = "data2vec"


class Data2VecSSLModel(SSLModel, Data2VecSSLPreTrainedModel):
    """data2vec feature extractor: the mean of the patch tokens after the final norm."""


class Data2VecSSLForImageClassification(SSLForImageClassification, Data2VecSSLPreTrainedModel):
    """data2vec encoder with a linear classifier on `pooler_output`."""

    model_class = Data2VecSSLModel


def data2vec_targets(
    block_outputs: list[torch.Tensor], layer_norm: str = "instance", layer_norm_targets: bool = False
) -> torch.Tensor:
    """data2vec's targets y = 1/K sum_l norm(a^l) over the K given block outputs (B, N, D) of the patch tokens
    (Baevski et al., 2022, Sec. 3.3): each normalised without parameters, per channel over the tokens
    (`"instance"`) or per token over the channels (`"layer"`), then averaged and optionally layer-normed."""
    normed = []
    for output in block_outputs:
        output = output.float()
        if layer_norm == "instance":
            output = F.instance_norm(output.transpose(1, 2)).transpose(1, 2)
        elif layer_norm == "layer":
            output = F.layer_norm(output, output.shape[-1:])
        elif layer_norm != "none":
            raise ValueError(f"layer_norm must be 'instance', 'layer' or 'none', got {layer_norm!r}")
        normed.append(output)
    targets = torch.stack(normed).mean(dim=0)
    return F.layer_norm(targets, targets.shape[-1:]) if layer_norm_targets else targets


class Data2VecSSLForPreTraining(Data2VecSSLPreTrainedModel):
    """data2vec (Baevski et al., 2022) for images.

    The student (`data2vec`, the `Data2VecSSLModel` that `AutoModel` loads) sees the image with its masked patches
    (`masks`, (V, B, N)) replaced by the mask token; a linear regression head (`regression_head`) maps its output
    tokens to predictions. The EMA teacher (`teacher`) sees the unmasked image; the average of its top K block
    outputs, each normalised, is the target at the masked patches. Smooth-L1 loss (`data2vec_loss`).

    Step hook `on_step_end`: EMA update of the teacher, momentum linear from `momentum_teacher` to
    `momentum_teacher_end` over the training. The whole encoder is averaged (the original shares the patch
    embedding between student and teacher and averages only the transformer blocks).
    """

    def __init__(self, config: Data2VecSSLConfig):
        super().__init__(config)
        self.data2vec = Data2VecSSLModel(config)
        width = config.backbone_config.hidden_size
        self.regression_head = ProjectionMLP(width, width, width, num_layers=1, use_bn=False)
        self.post_init()
        self.teacher = make_teacher(self.data2vec)
        self.freeze_untrained_parameters()

    def freeze_untrained_parameters(self) -> None:
        self.teacher.requires_grad_(False)

    def momentum_at_step(self, step: int, total_steps: int) -> float:
        """tau: linear from `momentum_teacher` (step 0) to `momentum_teacher_end` (`total_steps`), then constant."""
        start, end = self.config.momentum_teacher, self.config.momentum_teacher_end
        if total_steps <= 0:
            return end
        return start + min(max(step, 0), total_steps) / total_steps * (end - start)

    def forward(self, global_views: torch.Tensor, masks: torch.Tensor | None = None, **kwargs) -> SSLPreTrainingOutput:
        """`global_views` (V, B, C, H, W) (every view an image of its own), `masks` (V, B, N) bool, True = masked."""
        if global_views.ndim != 5:
            raise ValueError(f"global_views must be (views, batch, C, H, W), got {tuple(global_views.shape)}")
        if masks is None:
            raise ValueError("data2vec needs masks: set views.masking (type: block, mask_ratio: 0.6)")
        images = global_views.flatten(0, 1)
        masks = masks.flatten(0, 1)
        num_prefix = self.config.backbone_config.num_prefix_tokens
        student = self.data2vec(images, bool_masked_pos=masks).last_hidden_state[:, num_prefix:]
        predictions = self.regression_head(student[masks])
        with torch.no_grad():
            hidden_states = self.teacher(images, output_hidden_states=True).hidden_states
            top_blocks = [hidden[:, num_prefix:] for hidden in hidden_states[-self.config.top_k_layers :]]
            targets = data2vec_targets(top_blocks, self.config.target_layer_norm, self.config.layer_norm_targets)
            targets = targets[masks]
        loss = data2vec_loss(predictions, targets, beta=self.config.loss_beta, scale=self.config.loss_scale)
        with torch.no_grad():
            logs = {
                "loss": loss.detach(),
                "target_std": targets.std(dim=0).mean(),
                "prediction_std": predictions.detach().std(dim=0).mean(),
                "mask_ratio": masks.float().mean(),
            }
        embeddings = student[: global_views.shape[1]].mean(dim=1).detach()
        return SSLPreTrainingOutput(loss=loss, logs=logs, embeddings=embeddings)

    def on_step_end(self, progress) -> None:
        """EMA update of the teacher with this step's momentum."""
        ema_update_(self.teacher, self.data2vec, self.momentum_at_step(progress.step, progress.total_steps))
