"""Configuration of the masking-aware Vision Transformer shared by every ViT-based method."""

from transformers import PreTrainedConfig

# Width, depth, heads (and MLP flavour) of the sizes the SSL papers use.
VIT_SIZES = {
    "tiny": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
    "giant": dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, use_swiglu_ffn=True),
}

POOLINGS = ("cls", "mean", "cls+mean")
PATCH_EMBED_INITS = ("trunc_normal", "xavier_uniform")
POSITION_EMBEDDINGS = ("learned", "sincos")


class SSLViTConfig(PreTrainedConfig):
    r"""
    A ViT as DINO, DINOv2, iBOT, MAE, I-JEPA, MSN and MoCo v3 use it: pre-norm blocks with fused QKV, an optional
    CLS token, register tokens, LayerScale, SwiGLU, stochastic depth, and position embeddings that are interpolated
    to any input size.

    Args:
        image_size (`int`): side of the images the position embeddings are laid out for.
        patch_size (`int`): side of a square patch (8, 14, 16, or 4 for 28-32 px images).
        num_register_tokens (`int`): extra learned tokens after CLS (DINOv2 with registers); never pooled.
        layerscale_value (`float`, *optional*): initial LayerScale value; `None` turns LayerScale off.
        drop_path_uniform (`bool`): same stochastic-depth rate in every block (DINOv2) instead of a linear ramp (DINO).
        position_embedding_type (`str`): `"learned"` or `"sincos"` (fixed 2-D sin-cos table, MAE/MoCo v3/I-JEPA).
        interpolate_offset (`float`): DINO's 0.1 offset when resizing position embeddings (`scale_factor=(g+0.1)/M`);
            0 resizes to the exact size, as `transformers` and DINOv2-with-registers do.
        interpolate_antialias (`bool`): antialias when resizing position embeddings (DINOv2 with registers).
        pooling (`str`): what `pooler_output` is: `"cls"`, `"mean"` (of the patch tokens) or `"cls+mean"`.
        initializer_range (`float`): std of the truncated-normal init of linear layers and tokens.
        patch_embed_init (`str`): `"trunc_normal"` (std `initializer_range`, as `transformers`' ViT and I-JEPA) or
            `"xavier_uniform"` on the flattened patch projection (MAE, MoCo v3). For small patches the first gives
            patch features far smaller than the position embeddings, so at init every image looks alike.
    """

    model_type = "ssl_vit"

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    mlp_ratio: float = 4.0
    hidden_act: str = "gelu"
    use_swiglu_ffn: bool = False
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    layerscale_value: float | None = None
    drop_path_rate: float = 0.0
    drop_path_uniform: bool = False
    use_cls_token: bool = True
    num_register_tokens: int = 0
    position_embedding_type: str = "learned"
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    pooling: str = "cls"
    initializer_range: float = 0.02
    patch_embed_init: str = "trunc_normal"

    def __post_init__(self, **kwargs):
        if self.patch_size <= 0 or self.image_size % self.patch_size != 0:
            raise ValueError(
                f"image_size ({self.image_size}) must be a positive multiple of patch_size ({self.patch_size})"
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if "cls" in self.pooling and not self.use_cls_token:
            raise ValueError(f"pooling={self.pooling!r} needs use_cls_token=True")
        if self.position_embedding_type not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"position_embedding_type must be one of {POSITION_EMBEDDINGS}, got {self.position_embedding_type!r}"
            )
        if self.patch_embed_init not in PATCH_EMBED_INITS:
            raise ValueError(f"patch_embed_init must be one of {PATCH_EMBED_INITS}, got {self.patch_embed_init!r}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if self.num_register_tokens < 0:
            raise ValueError(f"num_register_tokens must be >= 0, got {self.num_register_tokens}")
        super().__post_init__(**kwargs)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: CLS (if any) then the registers."""
        return int(self.use_cls_token) + self.num_register_tokens

    @classmethod
    def from_size(cls, size: str, **kwargs) -> "SSLViTConfig":
        """A config for a named size (`tiny`, `small`, `base`, `large`, `giant`); `kwargs` override any field."""
        if size not in VIT_SIZES:
            raise ValueError(f"Unknown ViT size {size!r}; choose one of {sorted(VIT_SIZES)}")
        return cls(**{**VIT_SIZES[size], **kwargs})
