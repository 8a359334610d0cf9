"""VICReg: variance-invariance-covariance regularization (Bardes, Ponce and LeCun, 2022)."""

from ..base import SSLMethodConfig


class VICRegConfig(SSLMethodConfig):
    r"""
    VICReg's encoder and expander. Defaults are the paper's ImageNet setting (`main_vicreg.py` of
    facebookresearch/vicreg; ResNet-50: pass `backbone_config=SSLResNetConfig(depth=50)`).

    Args:
        backbone_config: the encoder f.
        expander_hidden_dim (`int`): width of the expander's hidden layers (8192).
        expander_dim (`int`): width of the embeddings z the loss regularises (8192).
        expander_num_layers (`int`): linear layers of the expander (3: `8192-8192-8192`).
        invariance_weight (`float`): lambda, weight of the mean squared error between the views (25).
        variance_weight (`float`): mu, weight of the standard-deviation hinge (25).
        covariance_weight (`float`): nu, weight of the off-diagonal covariance penalty (1).
        variance_target (`float`): gamma, the standard deviation every dimension is pushed to (1).
        variance_eps (`float`): epsilon under the square root of the variance (1e-4).
        gather_distributed (`bool`): variance and covariance over the embeddings of every process (the original's
            `FullGatherLayer`).
    """

    model_type = "vicreg"

    expander_hidden_dim: int = 8192
    expander_dim: int = 8192
    expander_num_layers: int = 3
    invariance_weight: float = 25.0
    variance_weight: float = 25.0
    covariance_weight: float = 1.0
    variance_target: float = 1.0
    variance_eps: float = 1e-4
    gather_distributed: bool = True

    def __post_init__(self, **kwargs):
        for name in ("expander_hidden_dim", "expander_dim", "expander_num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("invariance_weight", "variance_weight", "covariance_weight", "variance_eps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.variance_target <= 0:
            raise ValueError(f"variance_target must be > 0, got {self.variance_target}")
        super().__post_init__(**kwargs)
