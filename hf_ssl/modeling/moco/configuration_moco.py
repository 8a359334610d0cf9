"""MoCo v2: momentum contrast with an MLP head (He et al., 2020; Chen, Fan, Girshick and He, 2020)."""

from ..base import SSLMethodConfig


class MoCoConfig(SSLMethodConfig):
    r"""
    MoCo's query encoder, its momentum (key) encoder and the queue of keys. Defaults are MoCo v2's ImageNet setting
    (`main_moco.py --mlp --moco-t 0.2 --aug-plus --cos`; ResNet-50: pass `backbone_config=SSLResNetConfig(depth=50)`).
    MoCo v1 is `projection_num_layers=1, projection_dim=128, temperature=0.07`.

    Args:
        backbone_config: the encoder.
        projection_hidden_dim (`int`): width of the MLP head's hidden layer (2048).
        projection_dim (`int`): width of the keys and queries (128).
        projection_num_layers (`int`): linear layers of the head: 2 (MoCo v2's MLP, no BatchNorm) or 1 (MoCo v1's fc).
        projection_use_bn (`bool`): BatchNorm after the head's hidden layer (off in MoCo v2; small ViTs need it, their
            CLS outputs barely differ between images at init).
        queue_size (`int`): K, the number of negative keys in the queue (65536).
        temperature (`float`): tau of the InfoNCE loss (0.2; MoCo v1 uses 0.07).
        momentum (`float`): m of the key encoder's EMA, constant (0.999).
        gather_distributed (`bool`): enqueue the keys of every process (the global batch), as the original's
            `concat_all_gather`; every process then holds the same queue.
    """

    model_type = "moco"

    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    projection_num_layers: int = 2
    projection_use_bn: bool = False
    queue_size: int = 65536
    temperature: float = 0.2
    momentum: float = 0.999
    gather_distributed: bool = True

    def __post_init__(self, **kwargs):
        for name in ("projection_hidden_dim", "projection_dim", "projection_num_layers", "queue_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum}")
        super().__post_init__(**kwargs)
