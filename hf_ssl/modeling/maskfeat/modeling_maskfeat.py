"""MaskFeat models. `MaskFeatModel` is the encoder the paper evaluates: every patch, no masking, mean of the patch
tokens."""

import torch

from ...processing.masking import BlockMaskGenerator, flatten_masked_views
from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel, SSLPreTrainingOutput
from ..heads import LinearPredictionHead
from ..losses import masked_mse_loss
from ..targets import hog_features
from .configuration_maskfeat import MaskFeatConfig


class MaskFeatPreTrainedModel(SSLPreTrainedModel):
    config_class = MaskFeatConfig
    base_model_prefix = "maskfeat"


class MaskFeatModel(SSLModel, MaskFeatPreTrainedModel):
    """MaskFeat feature extractor: the ViT on all patches (no masking at inference), mean of the patch tokens."""


class MaskFeatForImageClassification(SSLForImageClassification, MaskFeatPreTrainedModel):
    """MaskFeat encoder with a linear classifier on `pooler_output`."""

    model_class = MaskFeatModel


class MaskFeatForPreTraining(MaskFeatPreTrainedModel):
    """MaskFeat (Wei et al., 2022): blocks of patches are replaced by the mask token at the encoder's input
    (`bool_masked_pos`); a linear head (`head`) predicts the HOG histogram of every patch from its output token; the
    loss is the MSE on the masked patches only. HOG is computed from the (normalised) input pixels in torch."""

    def __init__(self, config: MaskFeatConfig):
        super().__init__(config)
        self.maskfeat = MaskFeatModel(config)
        self.head = LinearPredictionHead(config.backbone_config.hidden_size, config.hog_dim)
        self.mask_generator = BlockMaskGenerator(config.mask_ratio, min_num_patches=config.min_num_patches)
        self.post_init()

    def forward(self, global_views: torch.Tensor, masks: torch.Tensor | None = None, **kwargs) -> SSLPreTrainingOutput:
        """MaskFeat loss on `global_views` (V, B, C, H, W) with `masks` (V, B, N) from the data loader or drawn here."""
        patch_size = self.config.backbone_config.patch_size
        pixel_values, masks = flatten_masked_views(global_views, masks, self.mask_generator, patch_size)
        encoded = self.maskfeat(pixel_values, bool_masked_pos=masks)
        predictions = self.head(self.maskfeat.backbone.patch_tokens(encoded.last_hidden_state))
        targets = hog_features(pixel_values, patch_size, self.config.hog_cell_size, self.config.hog_num_bins)
        loss = masked_mse_loss(predictions, targets.to(predictions.dtype), masks)
        batch_size = global_views.shape[1]
        return SSLPreTrainingOutput(
            loss=loss, logs={"loss": loss.detach()}, embeddings=encoded.pooler_output[:batch_size].detach()
        )
