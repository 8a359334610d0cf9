"""SimMIM: a simple framework for masked image modeling (Xie et al., 2022)."""

from ...backbones import SSLViTConfig
from ..base import SSLMethodConfig


class SimMIMConfig(SSLMethodConfig):
    r"""
    SimMIM's ViT encoder (masked patches replaced by a learned mask token) and its one-layer prediction head.
    Defaults are the paper's ViT-B setting: random masking of 32 x 32-pixel squares, ratio 0.6.

    Args:
        backbone_config: the encoder, an `ssl_vit` (default pooling: mean of the patch tokens).
        mask_ratio (`float`): fraction of the mask squares that are masked (0.6).
        mask_patch_size (`int`): side in pixels of a mask square (32), a multiple of the ViT's patch size; use a
            smaller one for tiny images (e.g. 8 for 28-px images with 4-px patches).
    """

    model_type = "simmim"
    default_pooling = "mean"

    mask_ratio: float = 0.6
    mask_patch_size: int = 32

    def __post_init__(self, **kwargs):
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        super().__post_init__(**kwargs)
        backbone = self.backbone_config
        if not isinstance(backbone, SSLViTConfig):
            raise ValueError(f"SimMIM needs an ssl_vit backbone (mask token), got {type(backbone).__name__}")
        if self.mask_patch_size < backbone.patch_size or self.mask_patch_size % backbone.patch_size:
            raise ValueError(
                f"mask_patch_size ({self.mask_patch_size}) must be a multiple of the patch size ({backbone.patch_size})"
            )

    @property
    def mask_unit(self) -> int:
        """Patches per side of one mask square."""
        return self.mask_patch_size // self.backbone_config.patch_size
