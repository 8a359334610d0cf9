"""Barlow Twins: self-supervised learning via redundancy reduction (Zbontar et al., 2021)."""

from ..base import SSLMethodConfig


class BarlowTwinsConfig(SSLMethodConfig):
    r"""
    Barlow Twins' encoder and projector. Defaults are the paper's ImageNet setting (`main.py` of
    facebookresearch/barlowtwins; ResNet-50: pass `backbone_config=SSLResNetConfig(depth=50)`).

    Args:
        backbone_config: the encoder.
        projection_hidden_dim (`int`): width of the projector's hidden layers (8192).
        projection_dim (`int`): width of the embedding whose cross-correlation is computed (8192).
        projection_num_layers (`int`): linear layers of the projector (3: `8192-8192-8192`).
        lambd (`float`): weight of the redundancy-reduction (off-diagonal) term (0.0051).
        gather_distributed (`bool`): BatchNorm statistics and cross-correlation over the global batch (the
            original's SyncBatchNorm and `all_reduce(c)`).
    """

    model_type = "barlow_twins"

    projection_hidden_dim: int = 8192
    projection_dim: int = 8192
    projection_num_layers: int = 3
    lambd: float = 0.0051
    gather_distributed: bool = True

    def __post_init__(self, **kwargs):
        for name in ("projection_hidden_dim", "projection_dim", "projection_num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lambd < 0:
            raise ValueError(f"lambd must be >= 0, got {self.lambd}")
        super().__post_init__(**kwargs)
