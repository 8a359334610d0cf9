"""SimSiam: exploring simple Siamese representation learning (Chen and He, 2021)."""

from ..base import SSLMethodConfig


class SimSiamConfig(SSLMethodConfig):
    r"""
    SimSiam's encoder (backbone + projection MLP) and prediction MLP h. Defaults are the paper's ImageNet setting
    (section 4 and the official `main_simsiam.py`: `--dim 2048 --pred-dim 512`; ResNet-50: pass
    `backbone_config=SSLResNetConfig(depth=50)`).

    Args:
        backbone_config: the backbone.
        projection_hidden_dim (`int`): width of the projector's hidden layers (2048).
        projection_dim (`int`): output width of the projector and the predictor (2048).
        projection_num_layers (`int`): linear layers of the projector (3), BatchNorm after each, the output one
            without affine parameters.
        prediction_hidden_dim (`int`): width of the predictor's bottleneck (512), BatchNorm on the hidden layer only.
    """

    model_type = "simsiam"

    projection_hidden_dim: int = 2048
    projection_dim: int = 2048
    projection_num_layers: int = 3
    prediction_hidden_dim: int = 512

    def __post_init__(self, **kwargs):
        for name in ("projection_hidden_dim", "projection_dim", "projection_num_layers", "prediction_hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        super().__post_init__(**kwargs)
