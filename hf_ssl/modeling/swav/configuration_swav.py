"""SwAV: swapping assignments between views (Caron et al., 2020)."""

from ..base import SSLMethodConfig


class SwAVConfig(SSLMethodConfig):
    r"""
    SwAV's encoder, projection head and prototypes. Defaults are the paper's ImageNet setting (`main_swav.py` and
    `scripts/swav_800ep_pretrain.sh` of facebookresearch/swav; ResNet-50: pass
    `backbone_config=SSLResNetConfig(depth=50)`).

    Args:
        backbone_config: the encoder f.
        projection_hidden_dim (`int`): width of the projection head's hidden layer (2048, `hidden_mlp`).
        projection_dim (`int`): width of the L2-normalised embedding z (128, `feat_dim`).
        num_prototypes (`int`): K (3000).
        temperature (`float`): tau of the predicted assignments softmax(z^T C / tau) (0.1).
        sinkhorn_epsilon (`float`): eps, the entropy weight of the codes (0.05).
        sinkhorn_iterations (`int`): Sinkhorn-Knopp steps (3).
        freeze_prototypes_epochs (`float`): epochs during which the prototypes get no update (1: the original's 313
            iterations at batch 4096).
        queue_length (`int`): embeddings of earlier batches kept per assigning crop and per process and added to the
            Sinkhorn batch when the batch is small (0: no queue; the original's `queue_length` / world size, e.g.
            3840 / 4 for batch 256 on 4 GPUs).
        queue_start_epoch (`int`): epoch from which the queue is filled (15); it is used once full.
        gather_distributed (`bool`): compute the codes over the batch of every process (the original's
            `distributed_sinkhorn`).
    """

    model_type = "swav"

    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    num_prototypes: int = 3000
    temperature: float = 0.1
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    freeze_prototypes_epochs: float = 1.0
    queue_length: int = 0
    queue_start_epoch: int = 15
    gather_distributed: bool = True

    def __post_init__(self, **kwargs):
        for name in ("projection_hidden_dim", "projection_dim", "num_prototypes", "sinkhorn_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("temperature", "sinkhorn_epsilon"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("freeze_prototypes_epochs", "queue_length", "queue_start_epoch"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        super().__post_init__(**kwargs)
