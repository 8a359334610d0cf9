"""I-JEPA: self-supervised learning from images with a joint-embedding predictive architecture (Assran et al., 2023)."""

from ..base import SSLMethodConfig

LOSS_TYPES = ("smooth_l1", "mse")


class IJepaSSLConfig(SSLMethodConfig):
    r"""
    I-JEPA's context encoder, EMA target encoder and narrow ViT predictor. Defaults are
    `ijepa/configs/in1k_vith14_ep300.yaml` (predictor 12 blocks of width 384, EMA 0.996 -> 1). The encoder is our ViT
    without a CLS token and with the fixed 2-D sin-cos table (the default when `backbone_config` does not say),
    pooled on the mean of the patch tokens. Masks come with the batch (`context_indices`, `target_indices`, from
    `views.masking: {type: multiblock, num_targets: 4, target_scale: [0.15, 0.2], target_aspect: [0.75, 1.5],
    context_scale: [0.85, 1.0]}`).

    Args:
        backbone_config: the encoder (context and target encoders share it).
        predictor_hidden_size (`int`): the predictor's width (384).
        predictor_num_hidden_layers (`int`): its depth (12 for ViT-H/14; use fewer for small encoders).
        predictor_num_attention_heads (`int`, *optional*): its heads; `None` uses the encoder's (the original).
        loss_type (`str`): `"smooth_l1"` (the original's) or `"mse"`.
        momentum_teacher (`float`): the target encoder's EMA momentum at the first step, raised linearly to 1 (0.996).
    """

    model_type = "ssl_ijepa"
    default_pooling = "mean"

    predictor_hidden_size: int = 384
    predictor_num_hidden_layers: int = 12
    predictor_num_attention_heads: int | None = None
    loss_type: str = "smooth_l1"
    momentum_teacher: float = 0.996

    def __post_init__(self, **kwargs):
        if self.backbone_config is None:
            self.backbone_config = {"model_type": "ssl_vit"}
        if isinstance(self.backbone_config, dict) and self.backbone_config.get("model_type", "ssl_vit") == "ssl_vit":
            self.backbone_config = {"use_cls_token": False, "position_embedding_type": "sincos",
                                    "interpolate_offset": 0.0, "pooling": "mean", **self.backbone_config}
        for name in ("predictor_hidden_size", "predictor_num_hidden_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.predictor_num_attention_heads is not None and (
            self.predictor_num_attention_heads < 1 or self.predictor_hidden_size % self.predictor_num_attention_heads
        ):
            raise ValueError(
                f"predictor_num_attention_heads ({self.predictor_num_attention_heads}) must divide "
                f"predictor_hidden_size ({self.predictor_hidden_size})"
            )
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if not 0.0 <= self.momentum_teacher <= 1.0:
            raise ValueError(f"momentum_teacher must be in [0, 1], got {self.momentum_teacher}")
        super().__post_init__(**kwargs)
        if getattr(self.backbone_config, "model_type", None) != "ssl_vit":
            raise ValueError("I-JEPA needs an ssl_vit backbone (token dropping with keep_indices)")
        heads = self.predictor_num_attention_heads or self.backbone_config.num_attention_heads
        if self.predictor_hidden_size % heads:
            raise ValueError(
                f"the predictor's width {self.predictor_hidden_size} is not divisible by its {heads} heads (the "
                "encoder's unless predictor_num_attention_heads is set)"
            )
