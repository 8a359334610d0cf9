"""DeepCluster v2 (Caron et al., 2020, the SwAV paper's improved DeepCluster)."""

from ..base import SSLMethodConfig


class DeepClusterV2Config(SSLMethodConfig):
    r"""
    DeepCluster v2's encoder, projection head, prototypes and memory bank. Defaults are the paper's ImageNet setting
    (`main_deepclusterv2.py` and `scripts/deepclusterv2_800ep_pretrain.sh` of facebookresearch/swav; ResNet-50:
    pass `backbone_config=SSLResNetConfig(depth=50)`).

    Args:
        backbone_config: the encoder.
        projection_hidden_dim (`int`): width of the projection head's hidden layer (2048).
        projection_dim (`int`): width of the L2-normalised embedding z (128).
        num_prototypes (`tuple[int, ...]`): K of each k-means clustering, one set of prototypes each (3000 x 3).
        temperature (`float`): tau of softmax(z^T C / tau) (0.1).
        kmeans_iterations (`int`): k-means iterations at every epoch (10).
        memory_size (`int`): projections of each global crop kept per process for the k-means: one epoch of this
            process' images (19968 = 312 steps x 64 images, the paper's 64-GPU ImageNet epoch). Must be >= every K.
    """

    model_type = "deepclusterv2"

    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    num_prototypes: list[int] | tuple[int, ...] = (3000, 3000, 3000)
    temperature: float = 0.1
    kmeans_iterations: int = 10
    memory_size: int = 19968

    def __post_init__(self, **kwargs):
        for name in ("projection_hidden_dim", "projection_dim", "memory_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.num_prototypes = list(self.num_prototypes)
        if not self.num_prototypes or any(not isinstance(k, int) or k < 1 for k in self.num_prototypes):
            raise ValueError(f"num_prototypes must be a non-empty list of positive ints, got {self.num_prototypes}")
        if max(self.num_prototypes) > self.memory_size:
            raise ValueError(
                f"memory_size ({self.memory_size}) must be >= every number of prototypes {self.num_prototypes}: "
                "k-means draws its initial centroids from the memory"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.kmeans_iterations < 0:
            raise ValueError(f"kmeans_iterations must be >= 0, got {self.kmeans_iterations}")
        super().__post_init__(**kwargs)
