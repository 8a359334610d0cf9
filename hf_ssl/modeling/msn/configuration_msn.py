"""MSN: masked Siamese networks for label-efficient learning (Assran et al., 2022)."""

from ..base import SSLMethodConfig


class MSNConfig(SSLMethodConfig):
    r"""
    MSN's anchor and EMA target encoders, projection head and prototypes. Defaults are
    `msn/configs/pretrain/msn_vits16.yaml` (ViT-S/16: 15 % of the anchor's patches dropped, head 2048-2048-256 with
    BatchNorm, 1024 prototypes, temperature 0.1 sharpened by 0.25 for the targets, me-max weight 1, Sinkhorn-Knopp
    on the targets). The evaluated encoder is the target encoder, pooled on the CLS token after the final norm (as
    `transformers`' `ViTMSNModel`; MSN's own evaluation takes the CLS token before it:
    `output_hidden_states=True`, `hidden_states[-1][:, 0]`).

    Args:
        backbone_config: the encoder (ViT).
        projection_hidden_dim (`int`): width of the head's hidden layers (2048).
        projection_dim (`int`): output width of the head, the prototypes' space (256).
        projection_use_bn (`bool`): BatchNorm in the head (true).
        num_prototypes (`int`): K (1024).
        temperature (`float`): tau of the anchors' softmax over cosine similarities to the prototypes (0.1).
        target_sharpen_temp (`float`): T sharpening the targets; their softmax has temperature tau * T (0.25).
        me_max_weight (`float`): lambda of the mean-entropy-maximisation regulariser (1.0).
        sinkhorn_iterations (`int`): Sinkhorn-Knopp iterations on the targets (3, the original's `use_sinkhorn`;
            0: off).
        mask_ratio (`float`): fraction of the anchor views' patches dropped (`patch_drop`: 0.15 for ViT-S/16). Used
            for the local (focal) views, and for the global anchor views when the batch has no `masks`.
        momentum_teacher (`float`): the target encoder's EMA momentum at the first step, raised linearly to 1 (0.996).
    """

    model_type = "msn"

    projection_hidden_dim: int = 2048
    projection_dim: int = 256
    projection_use_bn: bool = True
    num_prototypes: int = 1024
    temperature: float = 0.1
    target_sharpen_temp: float = 0.25
    me_max_weight: float = 1.0
    sinkhorn_iterations: int = 3
    mask_ratio: float = 0.15
    momentum_teacher: float = 0.996

    def __post_init__(self, **kwargs):
        for name in ("projection_hidden_dim", "projection_dim", "num_prototypes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("temperature", "target_sharpen_temp"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.me_max_weight < 0:
            raise ValueError(f"me_max_weight must be >= 0, got {self.me_max_weight}")
        if self.sinkhorn_iterations < 0:
            raise ValueError(f"sinkhorn_iterations must be >= 0, got {self.sinkhorn_iterations}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if not 0.0 <= self.momentum_teacher <= 1.0:
            raise ValueError(f"momentum_teacher must be in [0, 1], got {self.momentum_teacher}")
        super().__post_init__(**kwargs)
        if getattr(self.backbone_config, "model_type", None) != "ssl_vit":
            raise ValueError("MSN needs an ssl_vit backbone (patches dropped with keep_indices)")
