"""MAE models. `MaeModel` is the encoder the paper evaluates: every patch, no masking, mean of the patch tokens."""

import torch

from ...processing.masking import RandomMaskGenerator, flatten_masked_views
from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel, SSLPreTrainingOutput
from ..heads import MAEDecoder
from ..losses import masked_mse_loss
from ..targets import normalize_patches, patchify
from .configuration_mae import MaeConfig


class MaePreTrainedModel(SSLPreTrainedModel):
    config_class = MaeConfig
    base_model_prefix = "mae"


class MaeModel(SSLModel, MaePreTrainedModel):
    """MAE feature extractor: the ViT on all patches (no masking at inference), mean of the patch tokens."""


class MaeForImageClassification(SSLForImageClassification, MaePreTrainedModel):
    """MAE encoder with a linear classifier on `pooler_output`."""

    model_class = MaeModel


class MaeForPreTraining(MaePreTrainedModel):
    """Masked autoencoder (He et al., 2022).

    A random `mask_ratio` of the patches of every image is removed; the encoder (`mae`) sees only the visible ones
    (`keep_indices`, so its compute scales with them), the decoder (`decoder`) fills mask tokens in at the masked
    positions and predicts every patch's pixels; the loss is the MSE on the masked patches only, against the
    (per-patch normalised, `norm_pix_loss`) pixels.
    """

    def __init__(self, config: MaeConfig):
        super().__init__(config)
        backbone = config.backbone_config
        self.mae = MaeModel(config)
        self.decoder = MAEDecoder(
            backbone.hidden_size,
            backbone.image_size // backbone.patch_size,
            backbone.patch_size**2 * backbone.num_channels,
            hidden_size=config.decoder_hidden_size,
            num_hidden_layers=config.decoder_num_hidden_layers,
            num_attention_heads=config.decoder_num_attention_heads,
            mlp_ratio=config.decoder_mlp_ratio,
            layer_norm_eps=backbone.layer_norm_eps,
        )
        self.mask_generator = RandomMaskGenerator(config.mask_ratio)
        self.post_init()

    @property
    def patch_size(self) -> int:
        return self.config.backbone_config.patch_size

    def num_masked(self, num_patches: int) -> int:
        return int(round(self.config.mask_ratio * num_patches))

    def reconstruct(self, pixel_values: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel predictions (B, N, p p C) of every patch, encoder output) for images and (B, N) masks that hide
        the same number of patches in every image."""
        num_patches = masks.shape[1]
        num_visible = num_patches - self.num_masked(num_patches)
        torch._assert_async(
            (masks.sum(dim=1) == num_patches - num_visible).all(),
            "MAE masks must hide round(mask_ratio * num_patches) patches of every image",
        )
        ids_shuffle = masks.to(torch.uint8).argsort(dim=1, stable=True)  # visible patches first, in grid order
        ids_restore = ids_shuffle.argsort(dim=1)
        encoded = self.mae(pixel_values, keep_indices=ids_shuffle[:, :num_visible])
        num_prefix = self.config.backbone_config.num_prefix_tokens
        return self.decoder(encoded.last_hidden_state, ids_restore, num_prefix), encoded

    def forward(self, global_views: torch.Tensor, masks: torch.Tensor | None = None, **kwargs) -> SSLPreTrainingOutput:
        """MAE loss on `global_views` (V, B, C, H, W) (every view is an independent image); `masks` (V, B, N) from
        the data loader (`RandomMaskGenerator` with the same ratio) or drawn here."""
        pixel_values, masks = flatten_masked_views(global_views, masks, self.mask_generator, self.patch_size)
        predictions, encoded = self.reconstruct(pixel_values, masks)
        target = patchify(pixel_values, self.patch_size)
        if self.config.norm_pix_loss:
            target = normalize_patches(target)
        loss = masked_mse_loss(predictions, target, masks)
        logs = {"loss": loss.detach()}
        batch_size = global_views.shape[1]
        return SSLPreTrainingOutput(loss=loss, logs=logs, embeddings=encoded.pooler_output[:batch_size].detach())
