"""DINOv2: learning robust visual features without supervision (Oquab et al., 2023)."""

from ..ibot.configuration_ibot import IBOTConfig

CENTERINGS = ("sinkhorn_knopp", "centering")


class Dinov2SSLConfig(IBOTConfig):
    r"""
    DINOv2's pretraining: DINO's image-level loss and iBOT's patch-level loss with separate heads, Sinkhorn-Knopp
    centering of the teacher, and the KoLeo regulariser. Defaults are `dinov2/configs/ssl_default_config.yaml`
    (65536 prototypes per head, 2048 hidden, 256 bottleneck; teacher temperature 0.04 -> 0.07 over 30 epochs;
    teacher momentum 0.992 -> 1; KoLeo weight 0.1). The backbone's DINOv2 settings (LayerScale 1e-5, uniform
    stochastic depth, SwiGLU for giant, `num_register_tokens`) are `SSLViTConfig` fields; register tokens are never
    pooled.

    Args (besides iBOT's and DINO's):
        centering (`str`): `"sinkhorn_knopp"` (3 iterations over the global batch replace the teacher's centred
            softmax, for both heads) or `"centering"` (DINO/iBOT's EMA centre).
        sinkhorn_iterations (`int`): Sinkhorn-Knopp iterations (3).
        koleo_loss_weight (`float`): weight of the KoLeo regulariser on the student's CLS tokens of each global crop
            (0.1; 0 turns it off). DINOv2 computes it per process, on the local batch.
    """

    model_type = "dinov2_ssl"

    head_out_dim: int = 65536
    patch_out_dim: int = 65536
    shared_head: bool = False
    momentum_teacher: float = 0.992
    centering: str = "sinkhorn_knopp"
    sinkhorn_iterations: int = 3
    koleo_loss_weight: float = 0.1

    def __post_init__(self, **kwargs):
        if self.centering not in CENTERINGS:
            raise ValueError(f"centering must be one of {CENTERINGS}, got {self.centering!r}")
        if self.sinkhorn_iterations < 1:
            raise ValueError(f"sinkhorn_iterations must be >= 1, got {self.sinkhorn_iterations}")
        if self.koleo_loss_weight < 0:
            raise ValueError(f"koleo_loss_weight must be >= 0, got {self.koleo_loss_weight}")
        super().__post_init__(**kwargs)
