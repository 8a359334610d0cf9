"""NNCLR: nearest-neighbor contrastive learning of visual representations (Dwibedi et al., 2021)."""

from ..base import SSLMethodConfig


class NNCLRConfig(SSLMethodConfig):
    r"""
    NNCLR's encoder, projection MLP, prediction MLP and support set. Defaults are the paper's ImageNet setting
    (section 4.1: projector 2048-2048-256 with BatchNorm, predictor 4096-256, support set 98304, tau 0.1; ResNet-50:
    pass `backbone_config=SSLResNetConfig(depth=50)`).

    Args:
        backbone_config: the encoder.
        projection_hidden_dim (`int`): width of the projector's hidden layers (2048).
        projection_dim (`int`): output width d of the projector and the predictor (256).
        projection_num_layers (`int`): linear layers of the projector (3), BatchNorm after each.
        prediction_hidden_dim (`int`): width of the predictor's hidden layer (4096).
        queue_size (`int`): size of the support set Q (98304).
        temperature (`float`): tau of the contrastive loss (0.1).
        gather_distributed (`bool`): take the negatives from all processes and fill the support set with the
            projections of the global batch.
    """

    model_type = "nnclr"

    projection_hidden_dim: int = 2048
    projection_dim: int = 256
    projection_num_layers: int = 3
    prediction_hidden_dim: int = 4096
    queue_size: int = 98304
    temperature: float = 0.1
    gather_distributed: bool = True

    def __post_init__(self, **kwargs):
        for name in (
            "projection_hidden_dim", "projection_dim", "projection_num_layers", "prediction_hidden_dim", "queue_size"
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        super().__post_init__(**kwargs)
