"""BEiT: BERT pre-training of image transformers (Bao et al., 2022), with a tokenizer that can be trained here."""

from transformers import AutoConfig, PreTrainedConfig

from ...backbones import SSLViTConfig
from ..base import SSLMethodConfig


class BeitSSLConfig(SSLMethodConfig):
    r"""
    BEiT's ViT encoder (masked patches replaced by a learned mask token), its linear head over the visual-token
    vocabulary, and the frozen tokenizer that gives every patch its token. Masking is BEiT's blockwise algorithm:
    40 % of the patches, blocks of at least 16 patches, aspect ratio in [0.3, 1/0.3].

    Args:
        backbone_config: the encoder, an `ssl_vit` (default pooling: mean of the patch tokens, as BEiT fine-tunes).
        tokenizer_name_or_path (`str`, *optional*): a saved visual tokenizer (a directory or Hub id loading through
            `AutoModel`, e.g. a `KMeansPatchTokenizer` from `hf-ssl fit-tokenizer`); its config is copied into
            `tokenizer_config` and its weights into the pretraining model when it is built.
        tokenizer_config (`dict`, *optional*): the tokenizer's config (filled from `tokenizer_name_or_path`), so a
            saved pretraining checkpoint rebuilds its tokenizer without the original path.
        mask_ratio (`float`): fraction of the patches masked (0.4).
        min_num_patches (`int`): smallest block (16 on BEiT's 14x14 grid; use 4 on tiny grids).
        max_num_patches (`int`, *optional*): largest block (None: up to the remaining budget).
        min_aspect (`float`): smallest block aspect ratio (0.3; the largest is its inverse).
    """

    model_type = "beit_ssl"
    default_pooling = "mean"

    tokenizer_name_or_path: str | None = None
    tokenizer_config: dict | None = None
    mask_ratio: float = 0.4
    min_num_patches: int = 16
    max_num_patches: int | None = None
    min_aspect: float = 0.3

    def __post_init__(self, **kwargs):
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        largest = self.max_num_patches
        if self.min_num_patches < 1 or (largest is not None and largest < self.min_num_patches):
            raise ValueError(
                f"need 1 <= min_num_patches <= max_num_patches, got {self.min_num_patches}, {self.max_num_patches}"
            )
        if not 0.0 < self.min_aspect <= 1.0:
            raise ValueError(f"min_aspect must be in (0, 1], got {self.min_aspect}")
        super().__post_init__(**kwargs)
        if not isinstance(self.backbone_config, SSLViTConfig):
            raise ValueError(f"BEiT needs an ssl_vit backbone (mask token), got {type(self.backbone_config).__name__}")

    def resolved_tokenizer_config(self) -> PreTrainedConfig:
        """The tokenizer's config: `tokenizer_config`, else read from `tokenizer_name_or_path` (and kept in
        `tokenizer_config`); checked against the backbone's patch size and channels."""
        if self.tokenizer_config is None:
            if self.tokenizer_name_or_path is None:
                raise ValueError(
                    "BEiT pretraining needs a visual tokenizer: set tokenizer_name_or_path (fit one with "
                    "`hf-ssl fit-tokenizer`)"
                )
            self.tokenizer_config = AutoConfig.from_pretrained(self.tokenizer_name_or_path).to_dict()
        config = AutoConfig.for_model(**self.tokenizer_config)
        for name in ("patch_size", "num_channels"):
            if getattr(config, name, None) != getattr(self.backbone_config, name):
                raise ValueError(
                    f"the tokenizer's {name} ({getattr(config, name, None)}) differs from the backbone's "
                    f"({getattr(self.backbone_config, name)})"
                )
        return config
