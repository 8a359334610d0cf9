"""MaskFeat: masked feature prediction for self-supervised visual pre-training (Wei et al., 2022)."""

from ...backbones import SSLViTConfig
from ..base import SSLMethodConfig


class MaskFeatConfig(SSLMethodConfig):
    r"""
    MaskFeat's ViT encoder (masked patches replaced by a learned mask token) and linear head regressing the HOG
    features of the masked patches. Defaults are the paper's image setting: blockwise masking of 40 % of the
    patches, 9-bin HOG on 8 x 8-pixel cells (2 x 2 cells per 16-px patch), per RGB channel.

    Args:
        backbone_config: the encoder, an `ssl_vit` (default pooling: mean of the patch tokens).
        mask_ratio (`float`): fraction of the patches masked (0.4).
        min_num_patches (`int`): smallest block of the blockwise masking (16, BEiT's; use 4 on tiny grids).
        hog_cell_size (`int`): HOG cell side in pixels (8); divides the patch size.
        hog_num_bins (`int`): orientation bins (9).
    """

    model_type = "maskfeat"
    default_pooling = "mean"

    mask_ratio: float = 0.4
    min_num_patches: int = 16
    hog_cell_size: int = 8
    hog_num_bins: int = 9

    def __post_init__(self, **kwargs):
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        for name in ("min_num_patches", "hog_cell_size", "hog_num_bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        super().__post_init__(**kwargs)
        backbone = self.backbone_config
        if not isinstance(backbone, SSLViTConfig):
            raise ValueError(f"MaskFeat needs an ssl_vit backbone (mask token), got {type(backbone).__name__}")
        if backbone.patch_size % self.hog_cell_size:
            raise ValueError(f"hog_cell_size ({self.hog_cell_size}) must divide the patch size ({backbone.patch_size})")

    @property
    def hog_dim(self) -> int:
        """Width of a patch's HOG target: channels x cells per patch x bins."""
        backbone = self.backbone_config
        return backbone.num_channels * (backbone.patch_size // self.hog_cell_size) ** 2 * self.hog_num_bins
