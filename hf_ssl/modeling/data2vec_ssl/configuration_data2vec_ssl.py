"""data2vec (vision): a general framework for self-supervised learning (Baevski et al., 2022)."""

from ..base import SSLMethodConfig

TARGET_NORMS = ("instance", "layer", "none")


class Data2VecSSLConfig(SSLMethodConfig):
    r"""
    data2vec for images: a student ViT with a mask token regresses, at the masked patches, the average of the top K
    block outputs of its EMA teacher on the unmasked image. Defaults follow the paper (BEiT masking of 60 %, top
    K = 6 blocks, each instance-normed, smooth-L1 with beta = 2) and fairseq's
    `examples/data2vec/config/vision/pretraining/base_imagenet_d2v1.yaml` (EMA 0.999 -> 0.9998 linearly over the
    training, loss scaled by 1/sqrt(D)). The evaluated encoder is the student, pooled on the mean of the patch
    tokens (the paper's classification input). Masks come with the batch (`views.masking: {type: block,
    mask_ratio: 0.6, min_num_patches: 16}`).

    Args:
        backbone_config: the encoder (our ViT).
        top_k_layers (`int`): K, the teacher blocks averaged (6).
        target_layer_norm (`str`): normalisation of each block output before averaging: `"instance"` (over the
            patch tokens, per channel, no affine: the paper's instance norm), `"layer"` (over channels, no affine)
            or `"none"`.
        layer_norm_targets (`bool`): a parameter-free layer norm of the averaged target (false).
        loss_beta (`float`): beta of the smooth-L1 loss (2.0; 0 means L2).
        loss_scale (`float`, *optional*): scale of the per-patch loss; `None` is 1/sqrt(D), as the original.
        momentum_teacher (`float`): EMA momentum at the first step (0.999).
        momentum_teacher_end (`float`): EMA momentum at the last step, reached linearly (0.9998).
    """

    model_type = "data2vec_ssl"
    default_pooling = "mean"

    top_k_layers: int = 6
    target_layer_norm: str = "instance"
    layer_norm_targets: bool = False
    loss_beta: float = 2.0
    loss_scale: float | None = None
    momentum_teacher: float = 0.999
    momentum_teacher_end: float = 0.9998

    def __post_init__(self, **kwargs):
        if self.top_k_layers < 1:
            raise ValueError(f"top_k_layers must be >= 1, got {self.top_k_layers}")
        if self.target_layer_norm not in TARGET_NORMS:
            raise ValueError(f"target_layer_norm must be one of {TARGET_NORMS}, got {self.target_layer_norm!r}")
        if self.loss_beta < 0:
            raise ValueError(f"loss_beta must be >= 0, got {self.loss_beta}")
        if self.loss_scale is not None and self.loss_scale <= 0:
            raise ValueError(f"loss_scale must be > 0 or None, got {self.loss_scale}")
        for name in ("momentum_teacher", "momentum_teacher_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        super().__post_init__(**kwargs)
        backbone = self.backbone_config
        if getattr(backbone, "model_type", None) != "ssl_vit":
            raise ValueError("data2vec needs an ssl_vit backbone (mask token via bool_masked_pos)")
        if self.top_k_layers > backbone.num_hidden_layers:
            raise ValueError(
                f"top_k_layers ({self.top_k_layers}) exceeds the encoder's {backbone.num_hidden_layers} blocks"
            )
