"""SimMIM models. `SimMIMModel` is the encoder the paper evaluates: every patch, no masking, mean of the patch
tokens."""

import torch

from ...processing.masking import RandomMaskGenerator, flatten_masked_views
from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel, SSLPreTrainingOutput
from ..heads import LinearPredictionHead
from ..losses import masked_l1_loss
from ..targets import patchify
from .configuration_simmim import SimMIMConfig


class SimMIMPreTrainedModel(SSLPreTrainedModel):
    config_class = SimMIMConfig
    base_model_prefix = "simmim"


class SimMIMModel(SSLModel, SimMIMPreTrainedModel):
    """SimMIM feature extractor: the ViT on all patches (no masking at inference), mean of the patch tokens."""


class SimMIMForImageClassification(SSLForImageClassification, SimMIMPreTrainedModel):
    """SimMIM encoder with a linear classifier on `pooler_output`."""

    model_class = SimMIMModel


class SimMIMForPreTraining(SimMIMPreTrainedModel):
    """SimMIM (Xie et al., 2022): random squares of `mask_patch_size` pixels are replaced by the mask token at the
    encoder's input (`bool_masked_pos`); a linear head (`head`) maps every output patch token to its raw pixels; the
    loss is the L1 distance on the masked pixels only."""

    def __init__(self, config: SimMIMConfig):
        super().__init__(config)
        backbone = config.backbone_config
        self.simmim = SimMIMModel(config)
        self.head = LinearPredictionHead(backbone.hidden_size, backbone.patch_size**2 * backbone.num_channels)
        self.mask_generator = RandomMaskGenerator(config.mask_ratio, mask_unit=config.mask_unit)
        self.post_init()

    def forward(self, global_views: torch.Tensor, masks: torch.Tensor | None = None, **kwargs) -> SSLPreTrainingOutput:
        """SimMIM loss on `global_views` (V, B, C, H, W) with `masks` (V, B, N) from the data loader or drawn here."""
        patch_size = self.config.backbone_config.patch_size
        pixel_values, masks = flatten_masked_views(global_views, masks, self.mask_generator, patch_size)
        encoded = self.simmim(pixel_values, bool_masked_pos=masks)
        predictions = self.head(self.simmim.backbone.patch_tokens(encoded.last_hidden_state))
        loss = masked_l1_loss(predictions, patchify(pixel_values, patch_size), masks)
        batch_size = global_views.shape[1]
        return SSLPreTrainingOutput(
            loss=loss, logs={"loss": loss.detach()}, embeddings=encoded.pooler_output[:batch_size].detach()
        )
