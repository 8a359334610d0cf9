"""BYOL: bootstrap your own latent (Grill et al., 2020)."""

from ..base import SSLMethodConfig


class BYOLConfig(SSLMethodConfig):
    r"""
    BYOL's online network (encoder, projector g, predictor q) and target network (EMA of encoder and projector).
    Defaults are the paper's ImageNet setting (section 3.3 and appendix C; ResNet-50: pass
    `backbone_config=SSLResNetConfig(depth=50)`).

    Args:
        backbone_config: the encoder f.
        projection_hidden_dim (`int`): width of the hidden layer of g and q (4096).
        projection_dim (`int`): output width of g and q (256).
        prediction_hidden_dim (`int`): width of the predictor's hidden layer (4096).
        momentum (`float`): tau_base, the target's EMA rate at the first step, raised to 1 by a cosine (0.996).
    """

    model_type = "byol"

    projection_hidden_dim: int = 4096
    projection_dim: int = 256
    prediction_hidden_dim: int = 4096
    momentum: float = 0.996

    def __post_init__(self, **kwargs):
        for name in ("projection_hidden_dim", "projection_dim", "prediction_hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum}")
        super().__post_init__(**kwargs)
