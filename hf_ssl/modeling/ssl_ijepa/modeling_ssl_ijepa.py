"""I-JEPA models. `IJepaSSLModel` is the encoder the paper evaluates: the target encoder, pooled on the mean of
its patch tokens."""

import torch
import torch.nn.functional as F

from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel, SSLPreTrainingOutput
from ..heads import JEPAPredictor
from ..losses import ijepa_loss
from ..teacher import ema_update_, make_teacher
from .configuration_ssl_ijepa import IJepaSSLConfig


class IJepaSSLPreTrainedModel(SSLPreTrainedModel):
    config_class = IJepaSSLConfig
    base_model_prefix = "ijepa"


class IJepaSSLModel(SSLModel, IJepaSSLPreTrainedModel):
    """I-JEPA feature extractor: the mean of the patch tokens after the final norm."""


class IJepaSSLForImageClassification(SSLForImageClassification, IJepaSSLPreTrainedModel):
    """I-JEPA encoder with a linear classifier on `pooler_output`."""

    model_class = IJepaSSLModel


def gather_tokens(tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """tokens (B, N, D) at indices (B, n) -> (B, n, D)."""
    return tokens.gather(1, indices.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


class IJepaSSLForPreTraining(IJepaSSLPreTrainedModel):
    """I-JEPA (Assran et al., 2023): from one context block, predict the target encoder's representations of M
    target blocks of the same image.

    The context encoder (`encoder`) sees only the context patches (`keep_indices`: its cost grows with the visible
    tokens); the target encoder (`ijepa`, an EMA of the context encoder, the `IJepaSSLModel` that `AutoModel`
    loads) sees the whole image, and its layer-normed patch outputs at the target blocks are the targets; the
    predictor (`predictor`) maps the context tokens plus one mask token per target patch to predictions. The loss
    is smooth-L1 (or MSE) averaged over blocks, patches and channels.

    Step hook `on_step_end`: EMA update of the target encoder, momentum linear from `momentum_teacher` to 1 over the
    training (the original's schedule).
    """

    def __init__(self, config: IJepaSSLConfig):
        super().__init__(config)
        backbone = config.backbone_config
        self.encoder = IJepaSSLModel(config)
        self.predictor = JEPAPredictor(
            backbone.hidden_size,
            backbone.image_size // backbone.patch_size,
            hidden_size=config.predictor_hidden_size,
            num_hidden_layers=config.predictor_num_hidden_layers,
            num_attention_heads=config.predictor_num_attention_heads or backbone.num_attention_heads,
            mlp_ratio=backbone.mlp_ratio,
            layer_norm_eps=backbone.layer_norm_eps,
        )
        self.post_init()
        self.ijepa = make_teacher(self.encoder)
        self.freeze_untrained_parameters()

    def freeze_untrained_parameters(self) -> None:
        self.ijepa.requires_grad_(False)

    def momentum_at_step(self, step: int, total_steps: int) -> float:
        """m: linear from `momentum_teacher` (step 0) to 1 (`total_steps`), as the original's scheduler."""
        if total_steps <= 0:
            return 1.0
        start = self.config.momentum_teacher
        return start + min(max(step, 0), total_steps) * (1.0 - start) / total_steps

    def forward(
        self,
        global_views: torch.Tensor,
        context_indices: torch.Tensor | None = None,
        target_indices: torch.Tensor | None = None,
        **kwargs,
    ) -> SSLPreTrainingOutput:
        """`global_views` (V, B, C, H, W) (every view is an image of its own), `context_indices` (V, B, N_c) and
        `target_indices` (V, M, B, N_t) patch indices from the multi-block mask generator."""
        if global_views.ndim != 5:
            raise ValueError(f"global_views must be (views, batch, C, H, W), got {tuple(global_views.shape)}")
        if context_indices is None or target_indices is None:
            raise ValueError("I-JEPA needs context_indices and target_indices: set views.masking.type: multiblock")
        num_views, batch_size = global_views.shape[:2]
        if context_indices.shape[:2] != (num_views, batch_size) or target_indices.ndim != 4 or (
            target_indices.shape[0] != num_views or target_indices.shape[2] != batch_size
        ):
            raise ValueError(
                f"context_indices {tuple(context_indices.shape)} must be (views, batch, N_c) and target_indices "
                f"{tuple(target_indices.shape)} (views, targets, batch, N_t) for global_views "
                f"{tuple(global_views.shape)}"
            )
        images = global_views.flatten(0, 1)
        context = context_indices.flatten(0, 1)  # (V * B, N_c)
        targets = target_indices.transpose(0, 1).flatten(1, 2)  # (M, V * B, N_t)
        height, width = images.shape[-2:]
        patch_size = self.config.backbone_config.patch_size
        if height != width:
            raise ValueError(f"I-JEPA's predictor positions need square images, got {height}x{width}")
        num_prefix = self.config.backbone_config.num_prefix_tokens

        with torch.no_grad():
            target_tokens = self.ijepa(images).last_hidden_state[:, num_prefix:]
            normed = F.layer_norm(target_tokens, target_tokens.shape[-1:])
            target_features = torch.stack([gather_tokens(normed, block) for block in targets])
        context_tokens = self.encoder(images, keep_indices=context).last_hidden_state[:, num_prefix:]
        predictions = self.predictor(context_tokens, context, targets, height // patch_size)
        loss = ijepa_loss(predictions, target_features, self.config.loss_type)
        with torch.no_grad():
            logs = {
                "loss": loss.detach(),
                "context_ratio": torch.tensor(context.shape[1] / target_tokens.shape[1]),
                "target_std": target_features.std(dim=(0, 1, 2)).mean(),
                "prediction_std": predictions.detach().std(dim=(0, 1, 2)).mean(),
            }
        return SSLPreTrainingOutput(loss=loss, logs=logs, embeddings=target_tokens[:batch_size].mean(dim=1))

    def on_step_end(self, progress) -> None:
        """EMA update of the target encoder with this step's momentum."""
        ema_update_(self.ijepa, self.encoder, self.momentum_at_step(progress.step, progress.total_steps))
