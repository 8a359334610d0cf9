"""SupCon: supervised contrastive learning (Khosla et al., 2020)."""

from ..base import SSLMethodConfig


class SupConConfig(SSLMethodConfig):
    r"""
    SupCon's encoder and projection network. Defaults are the paper's (ResNet-50: pass
    `backbone_config=SSLResNetConfig(depth=50)`; the projection network of HobbitLong/SupContrast's `SupConResNet`).

    Args:
        backbone_config: the encoder Enc.
        projection_hidden_dim (`int`): width of the projection network's hidden layer (2048, the ResNet-50 width).
        projection_dim (`int`): width of the normalised projection z (128).
        temperature (`float`): tau (0.1, the paper's and the reference command's value).
        gather_distributed (`bool`): take positives and negatives from the batch of every process.
    """

    model_type = "supcon"

    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    temperature: float = 0.1
    gather_distributed: bool = True

    def __post_init__(self, **kwargs):
        for name in ("projection_hidden_dim", "projection_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        super().__post_init__(**kwargs)
