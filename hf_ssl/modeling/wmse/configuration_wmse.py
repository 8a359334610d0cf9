"""W-MSE: whitening for self-supervised representation learning (Ermolov et al., 2021)."""

from ..base import SSLMethodConfig


class WMSEConfig(SSLMethodConfig):
    r"""
    W-MSE's encoder and projection head. Defaults are the original code's (htdt/self-supervised `cfg.py`: CIFAR
    settings; its ImageNet-100 and STL-10 runs use `projection_dim=128, whitening_size=256`).

    Args:
        backbone_config: the encoder.
        projection_hidden_dim (`int`): width of the head's hidden layer (1024, `head_size`).
        projection_dim (`int`): width of the embedding that is whitened (64, `emb`).
        projection_num_layers (`int`): linear layers of the head (2, `head_layers`; BatchNorm and ReLU between).
        whitening_size (`int`): images per whitening sub-batch (128, `w_size`); must exceed `projection_dim` and
            divide the per-process batch.
        whitening_iterations (`int`): random splits into sub-batches per step, averaged (1, `w_iter`).
        whitening_eps (`float`): shrinkage of the covariance towards the identity (0, `w_eps`).
        normalize (`bool`): compare L2-normalised whitened vectors (MSE = 2 - 2 cos), the paper's default.
    """

    model_type = "wmse"

    projection_hidden_dim: int = 1024
    projection_dim: int = 64
    projection_num_layers: int = 2
    whitening_size: int = 128
    whitening_iterations: int = 1
    whitening_eps: float = 0.0
    normalize: bool = True

    def __post_init__(self, **kwargs):
        for name in ("projection_hidden_dim", "projection_dim", "projection_num_layers", "whitening_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.whitening_size <= self.projection_dim:
            raise ValueError(
                f"whitening_size must exceed projection_dim ({self.projection_dim}) for the covariance to be "
                f"invertible, got {self.whitening_size}"
            )
        if not 0.0 <= self.whitening_eps < 1.0:
            raise ValueError(f"whitening_eps must be in [0, 1), got {self.whitening_eps}")
        super().__post_init__(**kwargs)
