"""MAE: masked autoencoders are scalable vision learners (He et al., 2022)."""

from ...backbones import SSLViTConfig
from ..base import SSLMethodConfig


class MaeConfig(SSLMethodConfig):
    r"""
    MAE's ViT encoder (fixed sin-cos positions, pooled as the mean of the patch tokens) and its lightweight
    decoder. Defaults are the paper's (Sec. 4 / Table 1): 75 % masking, decoder 512-d x 8 blocks, normalised-pixel
    targets.

    Args:
        backbone_config: the encoder, an `ssl_vit` (default: sin-cos position embeddings, `pooling="mean"`).
        mask_ratio (`float`): fraction of the patches removed from the encoder's input (0.75).
        norm_pix_loss (`bool`): regress each patch's pixels normalised by their mean and std (the paper's best).
        decoder_hidden_size (`int`): decoder width (512).
        decoder_num_hidden_layers (`int`): decoder blocks (8).
        decoder_num_attention_heads (`int`): decoder heads (16).
        decoder_mlp_ratio (`float`): decoder MLP width / decoder width (4).
    """

    model_type = "mae"
    default_pooling = "mean"

    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    decoder_hidden_size: int = 512
    decoder_num_hidden_layers: int = 8
    decoder_num_attention_heads: int = 16
    decoder_mlp_ratio: float = 4.0

    def __post_init__(self, **kwargs):
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1): the encoder needs visible patches, got {self.mask_ratio}")
        for name in ("decoder_hidden_size", "decoder_num_hidden_layers", "decoder_num_attention_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.decoder_hidden_size % self.decoder_num_attention_heads or self.decoder_hidden_size % 4:
            raise ValueError(
                f"decoder_hidden_size ({self.decoder_hidden_size}) must be divisible by decoder_num_attention_heads "
                f"({self.decoder_num_attention_heads}) and by 4 (sin-cos positions)"
            )
        if self.backbone_config is None:
            self.backbone_config = {"model_type": "ssl_vit", "position_embedding_type": "sincos"}
        elif isinstance(self.backbone_config, dict):
            defaults = {"model_type": "ssl_vit", "position_embedding_type": "sincos"}
            self.backbone_config = {**defaults, **self.backbone_config}
        super().__post_init__(**kwargs)
        if not isinstance(self.backbone_config, SSLViTConfig):
            raise ValueError(
                f"MAE drops the masked patches from the encoder and needs an ssl_vit backbone, "
                f"got {type(self.backbone_config).__name__}"
            )
