"""Configuration of the ResNet backbone (torchvision's ResNet v1.5) used by the convolutional SSL methods."""

from transformers import PreTrainedConfig

# depth -> (block type, number of blocks in each of the four stages), as in torchvision.models.resnet.
RESNET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

# torchvision model names -> config fields.
RESNET_NAMES = {
    **{f"resnet{depth}": dict(depth=depth) for depth in RESNET_DEPTHS},
    "wide_resnet50_2": dict(depth=50, width_per_group=128),
    "wide_resnet101_2": dict(depth=101, width_per_group=128),
}

POOLINGS = ("avg",)


class SSLResNetConfig(PreTrainedConfig):
    r"""
    A ResNet exactly as `torchvision.models.resnet` builds it (v1.5: stride in the 3x3 convolution of bottlenecks),
    as SimCLR, MoCo, BYOL, SwAV, Barlow Twins, VICReg, SimSiam and DINO use it, without the classifier.

    Args:
        depth (`int`): 18, 34 (basic blocks), 50, 101 or 152 (bottleneck blocks).
        width_per_group (`int`): width of the bottlenecks' 3x3 convolutions per 64 channels; 128 gives torchvision's
            `wide_resnet50_2` / `wide_resnet101_2`. Basic blocks only support 64.
        num_channels (`int`): channels of the input images.
        cifar_stem (`bool`): a 3x3 stride-1 first convolution and no max-pool, for 28-32 px images (CIFAR, MNIST).
        zero_init_residual (`bool`): start the last BatchNorm of every residual block at zero, so that each block
            starts as the identity (Goyal et al., 2017).
        pooling (`str`): what `pooler_output` is; `"avg"`, the global average of the last feature map.
        channels_last (`bool`): run the convolutions in channels-last memory format (faster on GPUs with tensor
            cores; same values).
    """

    model_type = "ssl_resnet"

    depth: int = 50
    width_per_group: int = 64
    num_channels: int = 3
    cifar_stem: bool = False
    zero_init_residual: bool = False
    pooling: str = "avg"
    channels_last: bool = False

    def __post_init__(self, **kwargs):
        if self.depth not in RESNET_DEPTHS:
            raise ValueError(f"Unknown ResNet depth {self.depth!r}; choose one of {sorted(RESNET_DEPTHS)}")
        if self.width_per_group < 1:
            raise ValueError(f"width_per_group must be >= 1, got {self.width_per_group}")
        if self.layer_type == "basic" and self.width_per_group != 64:
            raise ValueError(
                f"ResNet-{self.depth} uses basic blocks, which only support width_per_group=64, "
                f"got {self.width_per_group}"
            )
        if self.num_channels < 1:
            raise ValueError(f"num_channels must be >= 1, got {self.num_channels}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS} for a ResNet, got {self.pooling!r}")
        super().__post_init__(**kwargs)

    @property
    def layer_type(self) -> str:
        """`"basic"` or `"bottleneck"` residual blocks."""
        return RESNET_DEPTHS[self.depth][0]

    @property
    def stage_depths(self) -> tuple[int, ...]:
        """Number of residual blocks in each of the four stages."""
        return RESNET_DEPTHS[self.depth][1]

    @property
    def hidden_sizes(self) -> list[int]:
        """Output channels of the four stages."""
        expansion = 1 if self.layer_type == "basic" else 4
        return [64 * 2**stage * expansion for stage in range(4)]

    @property
    def hidden_size(self) -> int:
        """Width of `pooler_output`: the channels of the last stage."""
        return self.hidden_sizes[-1]

    @classmethod
    def from_name(cls, name: str, **kwargs) -> "SSLResNetConfig":
        """A config for a torchvision model name (`resnet18` ... `resnet152`, `wide_resnet50_2`,
        `wide_resnet101_2`); `kwargs` override any field."""
        if name not in RESNET_NAMES:
            raise ValueError(f"Unknown ResNet name {name!r}; choose one of {sorted(RESNET_NAMES)}")
        return cls(**{**RESNET_NAMES[name], **kwargs})
