"""The ResNet backbone: torchvision's ResNet modules inside a `PreTrainedModel`.

The stem and the four stages are taken from `torchvision.models.resnet.ResNet` itself, so the computation is
torchvision's and the state dict keys are torchvision's (`conv1`, `bn1`, `layer1.0.conv1`, ...) minus `fc.*`:
a torchvision checkpoint loads with `load_state_dict(..., strict=True)` once its classifier is dropped.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_resnet import SSLResNetConfig

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
STAGES = ("layer1", "layer2", "layer3", "layer4")


class SSLResNetPreTrainedModel(PreTrainedModel):
    config_class = SSLResNetConfig
    base_model_prefix = "resnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["BasicBlock", "Bottleneck"]

    def residual_norms(self) -> list[nn.BatchNorm2d]:
        """The last BatchNorm of every residual branch (`bn3` of bottlenecks, `bn2` of basic blocks)."""
        return [
            block.bn3 if isinstance(block, Bottleneck) else block.bn2
            for block in self.modules()
            if isinstance(block, (Bottleneck, BasicBlock))
        ]

    @torch.no_grad()
    def _init_weights(self, module):
        """torchvision's ResNet init: Kaiming-normal (fan_out) convolutions, unit BatchNorms, and with
        `zero_init_residual` a zero scale on the last BatchNorm of each residual branch.

        Decided per BatchNorm, as `transformers` only calls this for modules that hold tensors themselves."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            zero_scale = self.config.zero_init_residual and any(module is norm for norm in self.residual_norms())
            (init.zeros_ if zero_scale else init.ones_)(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)


class SSLResNetModel(SSLResNetPreTrainedModel):
    """ResNet encoder. `last_hidden_state` is the last feature map (B, C, h, w); `pooler_output` its global
    average (B, C); `hidden_states` (when asked) the stem output and the four stage outputs."""

    def __init__(self, config: SSLResNetConfig):
        super().__init__(config)
        resnet = ResNet(BLOCKS[config.layer_type], list(config.stage_depths), width_per_group=config.width_per_group)
        if config.cifar_stem:
            self.conv1 = nn.Conv2d(config.num_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = (
                resnet.conv1
                if config.num_channels == 3
                else nn.Conv2d(config.num_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            )
            self.maxpool = resnet.maxpool
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        for name in STAGES:
            setattr(self, name, getattr(resnet, name))
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.conv1

    def check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must be (batch, channels, height, width), got shape {tuple(pixel_values.shape)}"
            )
        if pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels, the model expects {self.config.num_channels}"
            )

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        self.check_pixel_values(pixel_values)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        hidden_state = pixel_values.to(self.conv1.weight.dtype)
        if self.config.channels_last:
            hidden_state = hidden_state.contiguous(memory_format=torch.channels_last)
        hidden_state = self.maxpool(self.relu(self.bn1(self.conv1(hidden_state))))
        all_hidden_states = (hidden_state,) if output_hidden_states else None
        for name in STAGES:
            hidden_state = getattr(self, name)(hidden_state)
            if output_hidden_states:
                all_hidden_states += (hidden_state,)

        output = BaseModelOutputWithPooling(
            last_hidden_state=hidden_state,
            pooler_output=torch.flatten(F.adaptive_avg_pool2d(hidden_state, 1), 1),
            hidden_states=all_hidden_states,
        )
        return output if return_dict else output.to_tuple()
