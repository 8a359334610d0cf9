"""SimCLR: a simple framework for contrastive learning of visual representations (Chen et al., 2020)."""

from ..base import SSLMethodConfig


class SimCLRConfig(SSLMethodConfig):
    r"""
    SimCLR's encoder and projection head g. Defaults are the paper's ImageNet setting (ResNet-50: pass
    `backbone_config=SSLResNetConfig(depth=50)`; the default backbone is our ViT, pooled on CLS).

    Args:
        backbone_config: the encoder f.
        projection_hidden_dim (`int`): width of g's hidden layers (2048).
        projection_dim (`int`): output width of g, the space of the loss (128).
        projection_num_layers (`int`): linear layers of g: 2 for SimCLR v1, 3 for SimCLR v2.
        projection_use_bn (`bool`): BatchNorm after g's hidden layers (and no biases there), as the official code.
        projection_last_bn (`bool`): BatchNorm on g's output, as the official code.
        temperature (`float`): tau of NT-Xent. 0.1 is the paper's ImageNet value (large batches, 4096); the paper's
            CIFAR-10 runs and small batches use 0.5.
        gather_distributed (`bool`): contrast with the embeddings of every process (N = global batch).
    """

    model_type = "simclr"

    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    projection_num_layers: int = 2
    projection_use_bn: bool = True
    projection_last_bn: bool = True
    temperature: float = 0.1
    gather_distributed: bool = True

    def __post_init__(self, **kwargs):
        for name in ("projection_hidden_dim", "projection_dim", "projection_num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        super().__post_init__(**kwargs)
