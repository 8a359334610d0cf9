"""hf_ssl models <-> the plain `transformers` classes, so that a model loads where hf_ssl is not installed.

Our ViT maps onto the closest built-in class:

| our ViT                                         | transformers class          |
|-------------------------------------------------|-----------------------------|
| CLS token, no LayerScale, no registers, GELU MLP | `ViTModel`                 |
| LayerScale or SwiGLU, no registers              | `Dinov2Model`               |
| registers                                       | `Dinov2WithRegistersModel`  |

The weights go through one explicit key map (`vit_key_map`): the fused `qkv` projection is split into the
`q_proj`/`k_proj`/`v_proj` thirds, SwiGLU's fused `w12` into `gate_proj`/`up_proj`, and `transformers` itself writes
the checkpoint (`save_pretrained`). ResNet backbones go to `hf_ssl.convert.resnet`.

Position embeddings at other input sizes: our ViT resizes them like DINO (`scale_factor=(g + interpolate_offset) / M`,
antialias per `interpolate_antialias`); `ViTModel` (with `interpolate_pos_encoding=True`) and `Dinov2Model` resize to
`size=g` without antialias, `Dinov2WithRegistersModel` with antialias. The exported model therefore gives our
features at *every* input size only when our config has `interpolate_offset=0` and the antialias of the target
class; at the native `image_size` the features are always equal. A model imported with `from_transformers` gets the
settings that reproduce its source class at every size.
"""

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoModel,
    BitImageProcessor,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    PreTrainedModel,
    ResNetModel,
    ViTConfig,
    ViTModel,
)
from transformers.initialization import no_init_weights
from transformers.utils import logging
from transformers.utils.hub import cached_file

from ..backbones import SSLResNetModel, SSLViTConfig, SSLViTModel, TransformersBackbone
from ..modeling.base import SSLModel

logger = logging.get_logger(__name__)

# Settings of an image processor that `BitImageProcessor` understands the same way as ours.
PROCESSOR_KEYS = (
    "do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
    "do_normalize", "image_mean", "image_std", "do_convert_rgb",
)
# Whether each target class antialiases when it resizes position embeddings.
TARGET_ANTIALIAS = {ViTModel: False, Dinov2Model: False, Dinov2WithRegistersModel: True}


def backbone_of(model: PreTrainedModel) -> PreTrainedModel:
    """The encoder of an hf_ssl model: `model` itself for a bare backbone, else `model.backbone`."""
    if isinstance(model, (SSLViTModel, SSLResNetModel)):
        return model
    if isinstance(model, SSLModel):
        return model.backbone
    raise TypeError(f"expected an hf_ssl backbone or SSLModel (e.g. DinoModel), got {type(model).__name__}")


def target_class(config: SSLViTConfig) -> type[PreTrainedModel]:
    """The `transformers` class that computes what our ViT with this config computes."""
    if config.num_register_tokens:
        return Dinov2WithRegistersModel
    if config.layerscale_value is not None or config.use_swiglu_ffn:
        return Dinov2Model
    return ViTModel


def vit_key_map(config: SSLViTConfig, target: type[PreTrainedModel]) -> dict[str, tuple[str, ...]]:
    """Our state-dict key -> the target class's key(s), in the `transformers` v5 module names.

    Several target keys mean our tensor is their concatenation along dim 0 (fused qkv, SwiGLU's w12).
    """
    key_map = {
        "embeddings.cls_token": ("embeddings.cls_token",),
        "embeddings.position_embeddings": ("embeddings.position_embeddings",),
        "embeddings.patch_embeddings.projection.weight": ("embeddings.patch_embeddings.projection.weight",),
        "embeddings.patch_embeddings.projection.bias": ("embeddings.patch_embeddings.projection.bias",),
        "layernorm.weight": ("layernorm.weight",),
        "layernorm.bias": ("layernorm.bias",),
    }
    if target is ViTModel:
        layer_prefix = "layers.{}."
        block = {"norm1": "layernorm_before", "norm2": "layernorm_after"}
    else:
        layer_prefix = "encoder.layer.{}."
        block = {"norm1": "norm1", "norm2": "norm2"}
        key_map["embeddings.mask_token"] = ("embeddings.mask_token",)
        if target is Dinov2WithRegistersModel:
            key_map["embeddings.register_tokens"] = ("embeddings.register_tokens",)
    fused = {"attn.qkv": ("attention.q_proj", "attention.k_proj", "attention.v_proj"), "attn.proj": ("attention.o_proj",)}
    if config.use_swiglu_ffn:
        fused.update({"mlp.w12": ("mlp.gate_proj", "mlp.up_proj"), "mlp.w3": ("mlp.down_proj",)})
    else:
        fused.update({"mlp.fc1": ("mlp.fc1",), "mlp.fc2": ("mlp.fc2",)})
    for ours, theirs in list(block.items()):
        fused[ours] = (theirs,)

    for i in range(config.num_hidden_layers):
        ours_prefix, theirs_prefix = f"layers.{i}.", layer_prefix.format(i)
        for ours, theirs in fused.items():
            for param in ("weight", "bias"):
                if param == "bias" and ours == "attn.qkv" and not config.qkv_bias:
                    continue
                key_map[f"{ours_prefix}{ours}.{param}"] = tuple(f"{theirs_prefix}{t}.{param}" for t in theirs)
        if config.layerscale_value is not None:
            key_map[f"{ours_prefix}ls1.gamma"] = (f"{theirs_prefix}layer_scale1.lambda1",)
            key_map[f"{ours_prefix}ls2.gamma"] = (f"{theirs_prefix}layer_scale2.lambda1",)
    return key_map


def transformers_config(config: SSLViTConfig, target: type[PreTrainedModel]):
    """The target class's config for our ViT config (architecture only; no training settings)."""
    if not config.use_cls_token:
        raise ValueError("a ViT without a CLS token has no equivalent transformers class (ViT and DINOv2 need one)")
    common = dict(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        hidden_act=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps,
        qkv_bias=config.qkv_bias,
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_channels=config.num_channels,
        initializer_range=config.initializer_range,
    )
    if target is ViTModel:
        # The pooler is made the identity on the CLS token, so `pooler_output` is our CLS feature, not a random layer.
        intermediate_size = int(config.hidden_size * config.mlp_ratio)
        return ViTConfig(**common, intermediate_size=intermediate_size, pooler_act="linear",
                         pooler_output_size=config.hidden_size)
    if not float(config.mlp_ratio).is_integer():
        raise ValueError(f"{target.__name__} needs an integer mlp_ratio, got {config.mlp_ratio}")
    dinov2 = dict(
        **common,
        mlp_ratio=int(config.mlp_ratio),
        use_swiglu_ffn=config.use_swiglu_ffn,
        # Without LayerScale our blocks equal DINOv2's with lambda = 1.
        layerscale_value=config.layerscale_value if config.layerscale_value is not None else 1.0,
    )
    if target is Dinov2WithRegistersModel:
        return Dinov2WithRegistersConfig(**dinov2, num_register_tokens=config.num_register_tokens)
    return Dinov2Config(**dinov2)


def to_transformers(model: PreTrainedModel, ignore_pooling: bool = False) -> PreTrainedModel:
    """
    The plain `transformers` model (see the module docstring for the class) computing our backbone's
    `last_hidden_state`: [CLS, registers, patches] after the final LayerNorm.

    `pooler_output` of every target class is the CLS token (`ViTModel`'s pooler is exported as the identity).
    A model whose `pooling` is `"mean"` or `"cls+mean"` raises a `ValueError` unless `ignore_pooling=True`; then its
    users mean-pool the patch tokens of `last_hidden_state` themselves (`last_hidden_state[:, 1 + registers:]`).
    ResNet backbones go to `transformers.ResNetModel` (`hf_ssl.convert.resnet`); a backbone that already is a
    `transformers` model (`TransformersBackbone`) is returned as it is.
    """
    backbone = backbone_of(model)
    if isinstance(backbone, SSLResNetModel):
        from .resnet import resnet_to_transformers

        return resnet_to_transformers(model)
    if isinstance(backbone, TransformersBackbone):
        return backbone.model

    config = backbone.config
    if config.pooling != "cls" and not ignore_pooling:
        raise ValueError(
            f"pooling={config.pooling!r} has no equivalent in transformers (their pooler_output is the CLS token); "
            "pass ignore_pooling=True (--ignore-pooling) to export anyway and mean-pool the patch tokens yourself"
        )
    target = target_class(config)
    target_config = transformers_config(config, target)
    antialias = TARGET_ANTIALIAS[target]
    if config.interpolate_offset != 0 or config.interpolate_antialias != antialias:
        logger.warning(
            f"{target.__name__} resizes position embeddings with offset 0 and antialias={antialias}, this model with "
            f"offset {config.interpolate_offset} and antialias={config.interpolate_antialias}: features are equal "
            f"at {config.image_size}x{config.image_size} only"
        )

    ours = backbone.state_dict()
    state = {}
    for our_key, their_keys in vit_key_map(config, target).items():
        for their_key, part in zip(their_keys, ours[our_key].chunk(len(their_keys), dim=0)):
            state[their_key] = part.clone()
    dtype, hidden = ours["layernorm.weight"].dtype, config.hidden_size
    if target is ViTModel:
        state["pooler.dense.weight"] = torch.eye(hidden, dtype=dtype)
        state["pooler.dense.bias"] = torch.zeros(hidden, dtype=dtype)
    elif config.layerscale_value is None:
        for i in range(config.num_hidden_layers):
            for name in ("layer_scale1", "layer_scale2"):
                state[f"encoder.layer.{i}.{name}.lambda1"] = torch.ones(hidden, dtype=dtype)

    with no_init_weights():
        exported = target(target_config)
    exported.load_state_dict(state, strict=True)
    return exported.to(dtype).eval()


def from_transformers(
    model_or_path: PreTrainedModel | str | os.PathLike, model_class: type[PreTrainedModel] | None = None
) -> PreTrainedModel:
    """
    Our backbone from a `ViTModel`, `Dinov2Model`, `Dinov2WithRegistersModel` (or `ResNetModel`, through
    `hf_ssl.convert.resnet`): a model, a folder or a Hub id. The ViT gives equal `last_hidden_state` at every input
    size (`interpolate_offset=0` and the source class's antialias); its `pooler_output` is the CLS token, so a
    `ViTModel`'s trained tanh pooler, if any, is dropped.

    `model_class` (e.g. `DinoModel`) wraps the backbone in a method's feature model; by default the bare backbone
    (`SSLViTModel`, `SSLResNetModel`) is returned.
    """
    source = model_or_path if isinstance(model_or_path, PreTrainedModel) else AutoModel.from_pretrained(model_or_path)
    if isinstance(source, ResNetModel):
        from .resnet import resnet_from_transformers

        backbone = resnet_from_transformers(source)
    else:
        backbone = vit_from_transformers(source)
    return backbone if model_class is None or isinstance(backbone, model_class) else wrap(backbone, model_class)


def vit_from_transformers(source: PreTrainedModel) -> SSLViTModel:
    """`SSLViTModel` with the weights of a `ViTModel`, `Dinov2Model` or `Dinov2WithRegistersModel`."""
    target = next((cls for cls in TARGET_ANTIALIAS if isinstance(source, cls)), None)
    if target is None:
        raise TypeError(
            "from_transformers takes a ViTModel, Dinov2Model, Dinov2WithRegistersModel or ResNetModel, "
            f"got {type(source).__name__}"
        )
    config = ssl_vit_config(source.config, target)
    theirs = source.state_dict()
    state = {our_key: torch.cat([theirs[key] for key in their_keys], dim=0)
             for our_key, their_keys in vit_key_map(config, target).items()}
    state.setdefault("embeddings.mask_token", torch.zeros(1, config.hidden_size))
    with no_init_weights():
        model = SSLViTModel(config)
    model.load_state_dict(state, strict=True)
    return model.to(theirs["layernorm.weight"].dtype).eval()


def wrap(backbone: PreTrainedModel, model_class: type[PreTrainedModel]) -> PreTrainedModel:
    """A method's feature model (an `SSLModel` subclass such as `DinoModel`) around `backbone`'s weights."""
    if not (isinstance(model_class, type) and issubclass(model_class, SSLModel)):
        raise TypeError(f"model_class must be an SSLModel subclass such as DinoModel, got {model_class!r}")
    with no_init_weights():
        model = model_class(model_class.config_class(backbone_config=backbone.config))
    model.load_state_dict({f"backbone.{key}": value for key, value in backbone.state_dict().items()}, strict=True)
    return model.to(backbone.dtype).eval()


def ssl_vit_config(config, target: type[PreTrainedModel]) -> SSLViTConfig:
    """Our ViT config for a `ViTConfig`, `Dinov2Config` or `Dinov2WithRegistersConfig`."""
    for name in ("image_size", "patch_size"):
        if not isinstance(getattr(config, name), int):
            raise ValueError(f"only square {name} can be imported, got {getattr(config, name)}")
    if target is ViTModel:
        mlp_ratio = config.intermediate_size / config.hidden_size
        if int(config.hidden_size * mlp_ratio) != config.intermediate_size:
            raise ValueError(f"intermediate_size {config.intermediate_size} is not expressible as an MLP ratio")
        extra = dict(mlp_ratio=mlp_ratio)
    else:
        extra = dict(
            mlp_ratio=config.mlp_ratio,
            use_swiglu_ffn=config.use_swiglu_ffn,
            layerscale_value=config.layerscale_value,
            drop_path_rate=config.drop_path_rate,
            drop_path_uniform=True,
            num_register_tokens=getattr(config, "num_register_tokens", 0),
        )
    return SSLViTConfig(
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_channels=config.num_channels,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        hidden_act=config.hidden_act,
        qkv_bias=config.qkv_bias,
        layer_norm_eps=config.layer_norm_eps,
        initializer_range=config.initializer_range,
        interpolate_offset=0.0,
        interpolate_antialias=TARGET_ANTIALIAS[target],
        pooling="cls",
        **extra,
    )


def export_image_processor(model: PreTrainedModel, source: str | os.PathLike | None = None) -> BitImageProcessor:
    """
    A `BitImageProcessor` (shortest-edge resize, center crop, rescale, normalize) with the settings of the source's
    `preprocessor_config.json`, or else of `hf_ssl.processing.processor_for(model.config)` (ImageNet statistics,
    resize to image_size / 0.875, crop to image_size).
    """
    settings = None
    if source is not None:
        path = cached_file(source, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
        if path is not None:
            settings = json.loads(Path(path).read_text())
    if settings is None:
        from ..processing import processor_for

        settings = processor_for(model.config).to_dict()
    if settings.get("do_convert_grayscale"):
        raise ValueError("grayscale preprocessing (do_convert_grayscale) has no equivalent transformers processor")
    return BitImageProcessor(**{key: settings[key] for key in PROCESSOR_KEYS if settings.get(key) is not None})


def export(
    model_path_or_model: PreTrainedModel | str | os.PathLike,
    out_dir: str | os.PathLike,
    ignore_pooling: bool = False,
    overwrite: bool = False,
) -> Path:
    """
    Write a checkpoint that plain `transformers` loads (`AutoModel` and `AutoImageProcessor`, no hf_ssl) to
    `out_dir`: the weights of `to_transformers` and a `BitImageProcessor` config. The folder is written next to
    `out_dir` and renamed into place, so it is never half-written. Returns `out_dir`.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    if isinstance(model_path_or_model, PreTrainedModel):
        model, source = model_path_or_model, None
    else:
        model, source = AutoModel.from_pretrained(model_path_or_model), model_path_or_model
    exported = to_transformers(model, ignore_pooling=ignore_pooling)
    processor = export_image_processor(model, source)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        exported.save_pretrained(staging)
        processor.save_pretrained(staging)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.replace(out_dir, old)
            os.replace(staging, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", choices=["transformers"], default="transformers",
                        help="target format: the built-in transformers classes (ViTModel, Dinov2Model, ResNetModel)")
    parser.add_argument("model", help="hf_ssl model folder or Hub id")
    parser.add_argument("out", help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--ignore-pooling", action="store_true",
                        help="export a mean-pooling model anyway (its pooler_output becomes the CLS token)")


def run(args: argparse.Namespace) -> int:
    out = export(args.model, args.out, ignore_pooling=args.ignore_pooling, overwrite=args.overwrite)
    print(f"exported {args.model} to {out}")
    return 0
