"""ResNets between hf_ssl, plain `transformers` and torchvision checkpoints.

`transformers.ResNetModel` with `downsample_in_first_stage=False` and `downsample_in_bottleneck=False` computes
torchvision's ResNet v1.5 (stride in the 3x3 convolution of the bottleneck), so our `SSLResNetModel` exports to it
with one explicit key map (`resnet_key_map`) and gives the same `last_hidden_state` and pooled features.
It cannot express a CIFAR stem or wide bottlenecks (`width_per_group != 64`): those raise a `ValueError`.
"""

import re
from typing import NamedTuple

import torch
from transformers import PreTrainedModel, ResNetConfig, ResNetModel
from transformers.initialization import no_init_weights

from ..backbones import RESNET_DEPTHS, SSLResNetConfig, SSLResNetModel

BATCH_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def resnet_key_map(config: SSLResNetConfig) -> dict[str, str]:
    """Our (torchvision) state-dict key -> `transformers.ResNetModel` key, for every tensor of the model."""
    key_map = {"conv1.weight": "embedder.embedder.convolution.weight"}
    key_map.update({f"bn1.{t}": f"embedder.embedder.normalization.{t}" for t in BATCH_NORM_TENSORS})
    convs_per_block = 2 if config.layer_type == "basic" else 3
    in_channels = 64
    for stage, (num_blocks, out_channels) in enumerate(zip(config.stage_depths, config.hidden_sizes)):
        for block in range(num_blocks):
            ours, theirs = f"layer{stage + 1}.{block}.", f"encoder.stages.{stage}.layers.{block}."
            for z in range(1, convs_per_block + 1):
                key_map[f"{ours}conv{z}.weight"] = f"{theirs}layer.{z - 1}.convolution.weight"
                key_map.update(
                    {f"{ours}bn{z}.{t}": f"{theirs}layer.{z - 1}.normalization.{t}" for t in BATCH_NORM_TENSORS}
                )
            # torchvision and transformers both project the shortcut when the block changes shape.
            if block == 0 and (stage > 0 or in_channels != out_channels):
                key_map[f"{ours}downsample.0.weight"] = f"{theirs}shortcut.convolution.weight"
                key_map.update(
                    {f"{ours}downsample.1.{t}": f"{theirs}shortcut.normalization.{t}" for t in BATCH_NORM_TENSORS}
                )
        in_channels = out_channels
    return key_map


def transformers_resnet_config(config: SSLResNetConfig) -> ResNetConfig:
    """The `transformers.ResNetConfig` of torchvision's ResNet v1.5 with our config's depth and input channels."""
    if config.cifar_stem:
        raise ValueError("transformers.ResNetModel has no CIFAR stem (3x3 stride-1 conv, no max-pool); cannot export")
    if config.width_per_group != 64:
        raise ValueError(
            f"transformers.ResNetModel has no wide bottlenecks (width_per_group={config.width_per_group}); "
            "only width_per_group=64 can be exported"
        )
    return ResNetConfig(
        num_channels=config.num_channels,
        embedding_size=64,
        hidden_sizes=config.hidden_sizes,
        depths=list(config.stage_depths),
        layer_type=config.layer_type,
        hidden_act="relu",
        downsample_in_first_stage=False,
        downsample_in_bottleneck=False,
    )


def ssl_resnet_config(config: ResNetConfig) -> SSLResNetConfig:
    """Our config for a `transformers.ResNetConfig`, if it is one of torchvision's ResNet v1.5 architectures."""
    depth = next(
        (d for d, (layer_type, depths) in RESNET_DEPTHS.items()
         if layer_type == config.layer_type and list(depths) == list(config.depths)),
        None,
    )
    if depth is None:
        raise ValueError(
            f"ResNetConfig(layer_type={config.layer_type!r}, depths={list(config.depths)}) is none of torchvision's "
            f"ResNets {sorted(RESNET_DEPTHS)}"
        )
    ours = SSLResNetConfig(depth=depth, num_channels=config.num_channels)
    expected = dict(embedding_size=64, hidden_sizes=ours.hidden_sizes, hidden_act="relu",
                    downsample_in_first_stage=False, downsample_in_bottleneck=False)
    actual = {name: getattr(config, name) for name in expected}
    actual["hidden_sizes"] = list(actual["hidden_sizes"])
    if actual != expected:
        mismatched = {name: actual[name] for name in expected if actual[name] != expected[name]}
        raise ValueError(f"ResNetConfig differs from torchvision's ResNet-{depth} in {mismatched}")
    return ours


def resnet_backbone(model: PreTrainedModel) -> SSLResNetModel:
    """`model` itself if it is an `SSLResNetModel`, else the ResNet backbone of a method's model (`DinoModel`...)."""
    backbone = model if isinstance(model, SSLResNetModel) else getattr(model, "backbone", None)
    if not isinstance(backbone, SSLResNetModel):
        raise TypeError(f"expected an SSLResNetModel or a model with one as `backbone`, got {type(model).__name__}")
    return backbone


def resnet_to_transformers(model: PreTrainedModel) -> ResNetModel:
    """The `transformers.ResNetModel` computing our ResNet (an `SSLResNetModel`, or a method's model with one as
    backbone): same `last_hidden_state`; its `pooler_output` (B, C, 1, 1) flattened is our `pooler_output`."""
    backbone = resnet_backbone(model)
    config = transformers_resnet_config(backbone.config)
    ours = backbone.state_dict()
    state = {theirs: ours[key].clone() for key, theirs in resnet_key_map(backbone.config).items()}
    with no_init_weights():
        exported = ResNetModel(config)
    exported.load_state_dict(state, strict=True)
    return exported.to(backbone.conv1.weight.dtype).eval()


def resnet_from_transformers(model: ResNetModel) -> SSLResNetModel:
    """Our `SSLResNetModel` from a `transformers.ResNetModel` of one of torchvision's architectures."""
    if not isinstance(model, ResNetModel):
        raise TypeError(f"expected a transformers ResNetModel, got {type(model).__name__}")
    config = ssl_resnet_config(model.config)
    theirs = model.state_dict()
    state = {key: theirs[their_key].clone() for key, their_key in resnet_key_map(config).items()}
    with no_init_weights():
        imported = SSLResNetModel(config)
    imported.load_state_dict(state, strict=True)
    return imported.to(theirs["embedder.embedder.convolution.weight"].dtype).eval()


class ResNetStateDict(NamedTuple):
    """A torchvision-layout ResNet state dict ready for `SSLResNetModel.load_state_dict`, the config it fits, and
    what did not match: keys the model needs that the checkpoint lacks, and checkpoint keys the model lacks."""

    state_dict: dict[str, torch.Tensor]
    config: SSLResNetConfig
    missing_keys: list[str]
    unexpected_keys: list[str]


def resnet_config_from_state_dict(state_dict: dict[str, torch.Tensor], **kwargs) -> SSLResNetConfig:
    """The `SSLResNetConfig` of a torchvision-layout ResNet state dict (depth, width, stem, input channels);
    `kwargs` set the remaining fields."""
    if "conv1.weight" not in state_dict:
        raise ValueError("not a torchvision ResNet state dict: no 'conv1.weight' (wrong prefix?)")
    blocks = {}
    for key in state_dict:
        match = re.match(r"layer([1-4])\.(\d+)\.", key)
        if match:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    stage_depths = tuple(len(blocks.get(stage, ())) for stage in (1, 2, 3, 4))
    layer_type = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    depth = next((d for d, spec in RESNET_DEPTHS.items() if spec == (layer_type, stage_depths)), None)
    if depth is None:
        raise ValueError(f"{layer_type} blocks per stage {stage_depths} match none of torchvision's ResNets")
    conv1 = state_dict["conv1.weight"]
    width = state_dict["layer1.0.conv1.weight"].shape[0] if layer_type == "bottleneck" else 64
    return SSLResNetConfig(
        depth=depth, width_per_group=width, num_channels=conv1.shape[1], cifar_stem=conv1.shape[-1] == 3, **kwargs
    )


def resnet_state_dict_from_torchvision(
    state_dict: dict[str, torch.Tensor], prefix: str = "", config: SSLResNetConfig | None = None
) -> ResNetStateDict:
    """
    The ResNet weights of a torchvision-layout checkpoint (torchvision itself, or the `module.encoder_q.` /
    `module.backbone.`-style trunks of SSL checkpoints): the keys under `prefix` with the prefix stripped, the
    classifier or projection head `fc.*` dropped. Keys outside `prefix` (other heads, the other encoder) are ignored.
    Without `config`, the architecture is read from the weights (`resnet_config_from_state_dict`).
    """
    weights = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    weights = {key: value for key, value in weights.items() if not key.startswith("fc.")}
    if config is None:
        config = resnet_config_from_state_dict(weights)
    with torch.device("meta"):
        expected = set(SSLResNetModel(config).state_dict())
    return ResNetStateDict(
        state_dict={key: value for key, value in weights.items() if key in expected},
        config=config,
        missing_keys=sorted(expected - weights.keys()),
        unexpected_keys=sorted(weights.keys() - expected),
    )
