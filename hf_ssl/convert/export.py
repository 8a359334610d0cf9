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

The other way, `from_transformers` imports the Hub formats of the SSL models (`ViTModel` for facebook/dino-*,
`Dinov2Model`, `ViTMAEModel`/`ViTMAEForPreTraining`, `IJepaModel`, `ViTMSNModel`, and `BeitModel`/
`Data2VecVisionModel` where our ViT computes them exactly) through one `Layout` table per class family, into the
bare backbone, a method's feature model or its pretraining model (MAE's decoder included).
"""

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    BeitConfig,
    BeitModel,
    BitImageProcessor,
    Data2VecVisionConfig,
    Data2VecVisionModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    IJepaConfig,
    IJepaModel,
    PreTrainedModel,
    ResNetModel,
    ViTConfig,
    ViTMAEConfig,
    ViTMAEForPreTraining,
    ViTMAEModel,
    ViTModel,
    ViTMSNModel,
)
from transformers.initialization import no_init_weights
from transformers.utils import logging
from transformers.utils.hub import cached_file

from ..backbones import SSLResNetModel, SSLViTConfig, SSLViTModel, TransformersBackbone
from ..modeling.base import SSLForImageClassification, SSLMethodConfig, SSLModel

logger = logging.get_logger(__name__)

# Settings of an image processor that `BitImageProcessor` understands the same way as ours.
PROCESSOR_KEYS = (
    "do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
    "do_normalize", "image_mean", "image_std", "do_convert_rgb",
)


@dataclass(frozen=True)
class Layout:
    """Where a family of `transformers` ViT classes keeps the tensors of our ViT, and how it computes.

    `block` maps our block modules to theirs under `layer` (formatted with the block index); several names mean
    our tensor is theirs concatenated along dim 0 (fused qkv, SwiGLU's w12). The top-level names
    (`embeddings.cls_token`, `embeddings.position_embeddings`, `embeddings.patch_embeddings.projection`,
    `layernorm`, `embeddings.mask_token`, `embeddings.register_tokens`) are the same in every class.

    Args:
        layer: key prefix of block i (`"layers.{}."`).
        block: our block module -> their module(s).
        layerscale: their names (under `layer`) of our `ls1.gamma` / `ls2.gamma`.
        key_bias: False where the key projection has no bias (BEiT): ours is zero there.
        mask_token: whether the class has a mask token (imported when present, exported when True).
        prefix: where the encoder sits in the class's state dict (`ViTMAEForPreTraining`: `vit.`).
        dropped: their key prefix -> why those tensors are not part of our ViT (warned about on import).
        pooling: our pooling that gives the class's pooled feature.
        position_embedding_type: `"sincos"` where the original's table is fixed (MAE, I-JEPA).
        antialias: whether the class antialiases when it resizes position embeddings (all resize to `size=`).
    """

    layer: str
    block: dict[str, tuple[str, ...]]
    layerscale: tuple[str, str] | None = None
    key_bias: bool = True
    mask_token: bool = False
    prefix: str = ""
    dropped: dict[str, str] = field(default_factory=dict)
    pooling: str = "cls"
    position_embedding_type: str = "learned"
    antialias: bool = False


VIT_BLOCK = {
    "norm1": ("layernorm_before",),
    "attn.qkv": ("attention.q_proj", "attention.k_proj", "attention.v_proj"),
    "attn.proj": ("attention.o_proj",),
    "norm2": ("layernorm_after",),
    "mlp.fc1": ("mlp.fc1",),
    "mlp.fc2": ("mlp.fc2",),
}
DINOV2_BLOCK = {
    **VIT_BLOCK,
    "norm1": ("norm1",),
    "norm2": ("norm2",),
    "mlp.w12": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.w3": ("mlp.down_proj",),
}
DATA2VEC_VISION_BLOCK = {
    "norm1": ("layernorm_before",),
    "attn.qkv": ("attention.attention.query", "attention.attention.key", "attention.attention.value"),
    "attn.proj": ("attention.output.dense",),
    "norm2": ("layernorm_after",),
    "mlp.fc1": ("intermediate.dense",),
    "mlp.fc2": ("output.dense",),
}
POOLER = {"pooler.": "the class's pooler (tanh layer): pooler_output here is the pooled token itself"}
DINOV2 = Layout("encoder.layer.{}.", DINOV2_BLOCK, layerscale=("layer_scale1.lambda1", "layer_scale2.lambda1"),
                mask_token=True)
MAE = Layout("layers.{}.", VIT_BLOCK, pooling="mean", position_embedding_type="sincos")
BEIT_LIKE = dict(layerscale=("lambda_1", "lambda_2"), key_bias=False, mask_token=True)

LAYOUTS: dict[type[PreTrainedModel], Layout] = {
    ViTModel: Layout("layers.{}.", VIT_BLOCK, dropped=POOLER),
    Dinov2Model: DINOV2,
    Dinov2WithRegistersModel: replace(DINOV2, antialias=True),
    ViTMAEModel: MAE,
    ViTMAEForPreTraining: replace(MAE, prefix="vit.",
                                  dropped={"decoder.": "the MAE decoder (kept by MaeForPreTraining)"}),
    IJepaModel: Layout("layers.{}.", VIT_BLOCK, mask_token=True, dropped=POOLER, pooling="mean",
                       position_embedding_type="sincos"),
    ViTMSNModel: Layout("layers.{}.", VIT_BLOCK),
    BeitModel: Layout("layers.{}.", VIT_BLOCK, **BEIT_LIKE),
    Data2VecVisionModel: Layout("encoder.layer.{}.", DATA2VEC_VISION_BLOCK, **BEIT_LIKE),
}
# The classes an hf_ssl ViT is exported to.
EXPORT_TARGETS = (ViTModel, Dinov2Model, Dinov2WithRegistersModel)


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


def block_key_map(
    config: SSLViTConfig, layout: Layout, ours: str = "layers.{}.", theirs: str | None = None
) -> dict[str, tuple[str | None, ...]]:
    """Our block tensors -> the layout's, for every block of `config`; `None` marks a part that is zero in their
    class (BEiT's key bias). `ours`/`theirs` are the block prefixes (MAE's decoder blocks have their own)."""
    theirs = layout.layer if theirs is None else theirs
    modules = ["norm1", "attn.qkv", "attn.proj", "norm2", *(("mlp.w12", "mlp.w3") if config.use_swiglu_ffn
                                                           else ("mlp.fc1", "mlp.fc2"))]
    missing = [module for module in modules if module not in layout.block]
    if missing:
        raise ValueError(f"this transformers layout has no {missing} (SwiGLU is DINOv2's only)")
    if config.layerscale_value is not None and layout.layerscale is None:
        raise ValueError("this transformers layout has no LayerScale")
    key_map = {}
    for i in range(config.num_hidden_layers):
        our_prefix, their_prefix = ours.format(i), theirs.format(i)
        for module in modules:
            for param in ("weight", "bias"):
                if param == "bias" and module == "attn.qkv" and not config.qkv_bias:
                    continue
                parts = [f"{their_prefix}{name}.{param}" for name in layout.block[module]]
                if param == "bias" and module == "attn.qkv" and not layout.key_bias:
                    parts[1] = None
                key_map[f"{our_prefix}{module}.{param}"] = tuple(parts)
        if config.layerscale_value is not None:
            for our_name, their_name in zip(("ls1.gamma", "ls2.gamma"), layout.layerscale):
                key_map[f"{our_prefix}{our_name}"] = (f"{their_prefix}{their_name}",)
    return key_map


def vit_key_map(config: SSLViTConfig, target: type[PreTrainedModel]) -> dict[str, tuple[str | None, ...]]:
    """Our state-dict key -> the target class's key(s), in the `transformers` v5 module names (without the
    layout's `prefix`). Several target keys mean our tensor is their concatenation along dim 0 (fused qkv,
    SwiGLU's w12); `None` a part that is zero in their class."""
    layout = LAYOUTS[target]
    key_map = {
        "embeddings.position_embeddings": ("embeddings.position_embeddings",),
        "embeddings.patch_embeddings.projection.weight": ("embeddings.patch_embeddings.projection.weight",),
        "embeddings.patch_embeddings.projection.bias": ("embeddings.patch_embeddings.projection.bias",),
        "layernorm.weight": ("layernorm.weight",),
        "layernorm.bias": ("layernorm.bias",),
    }
    if config.use_cls_token:
        key_map["embeddings.cls_token"] = ("embeddings.cls_token",)
    if layout.mask_token:
        key_map["embeddings.mask_token"] = ("embeddings.mask_token",)
    if config.num_register_tokens:
        key_map["embeddings.register_tokens"] = ("embeddings.register_tokens",)
    return {**key_map, **block_key_map(config, layout)}


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
    antialias = LAYOUTS[target].antialias
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
    model_or_path: PreTrainedModel | str | os.PathLike,
    model_class: type[PreTrainedModel] | None = None,
    **settings,
) -> PreTrainedModel:
    """
    Our model from a `transformers` one: a model, a folder or a Hub id of a class in `LAYOUTS` (`ViTModel`
    (facebook/dino-*), `Dinov2Model`, `Dinov2WithRegistersModel`, `ViTMAEModel`/`ViTMAEForPreTraining`
    (facebook/vit-mae-*), `IJepaModel` (facebook/ijepa_*), `ViTMSNModel` (facebook/vit-msn-*), `BeitModel`,
    `Data2VecVisionModel`), or a `ResNetModel` (through `hf_ssl.convert.resnet`). The ViT gives equal
    `last_hidden_state` at every input size (`interpolate_offset=0` and the source class's antialias) and pools
    like the source (`pooler_output` is the CLS token, the mean of the patch tokens for MAE and I-JEPA); a trained
    tanh pooler, if any, is dropped with a warning.

    `model_class` wraps the backbone in a method's feature model (`DinoModel`) or builds its pretraining model
    (`MaeForPreTraining`, `IJepaSSLForPreTraining`, `MSNForPreTraining`, ...) so that pretraining can continue:
    every encoder of it (student and EMA teacher) gets the weights, MAE's decoder comes from a
    `ViTMAEForPreTraining`, other heads start from their initialisation. `settings` are fields of the method's
    config (e.g. `projection_hidden_dim=...`, `top_k_layers=...`); the MAE fields default to the source's
    `ViTMAEConfig`.
    By default the bare backbone (`SSLViTModel`, `SSLResNetModel`) is returned.
    """
    source = model_or_path if isinstance(model_or_path, PreTrainedModel) else load_transformers_model(model_or_path)
    if isinstance(source, ResNetModel):
        from .resnet import resnet_from_transformers

        backbone = resnet_from_transformers(source)
    else:
        backbone = vit_from_transformers(source, keep_decoder=_is_pretraining_class(model_class))
    if model_class is None or isinstance(backbone, model_class):
        return backbone
    if _is_pretraining_class(model_class):
        return pretraining_from_backbone(backbone, model_class, source, **settings)
    return wrap(backbone, model_class, **settings)


def _is_pretraining_class(model_class) -> bool:
    """A method's pretraining model (`MaeForPreTraining`): an hf_ssl model that is not a feature model."""
    return isinstance(model_class, type) and issubclass(model_class, PreTrainedModel) and issubclass(
        getattr(model_class, "config_class", object), SSLMethodConfig
    ) and not issubclass(model_class, (SSLModel, SSLForImageClassification))


def load_transformers_model(path: str | os.PathLike) -> PreTrainedModel:
    """A saved `transformers` model in the class its config names when that class is in `LAYOUTS` (so a
    `ViTMAEForPreTraining` keeps its decoder), else through `AutoModel`."""
    architectures = AutoConfig.from_pretrained(path).architectures or []
    classes = {cls.__name__: cls for cls in LAYOUTS}
    model_class = next((classes[name] for name in architectures if name in classes), AutoModel)
    return model_class.from_pretrained(path)


def source_class(source: PreTrainedModel) -> type[PreTrainedModel]:
    """The class in `LAYOUTS` of a `transformers` model; a `TypeError` naming the supported classes for any other."""
    cls = next((cls for cls in LAYOUTS if type(source) is cls), None) or next(
        (cls for cls in LAYOUTS if isinstance(source, cls)), None)
    if cls is None:
        names = ", ".join(cls.__name__ for cls in LAYOUTS)
        raise TypeError(f"from_transformers takes a {names} or ResNetModel, got {type(source).__name__}")
    return cls


def import_state(
    theirs: dict[str, torch.Tensor], key_map: dict[str, tuple[str | None, ...]], shapes: dict[str, torch.Size]
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Our state dict from `theirs` through `key_map` (parts concatenated along dim 0, `None` parts zero, shapes
    as in `shapes`), and the keys of `theirs` it used. Keys of `key_map` whose tensors `theirs` lacks are
    left out (the caller decides which may be)."""
    state, used = {}, set()
    for our_key, their_keys in key_map.items():
        present = [key for key in their_keys if key is not None]
        if not all(key in theirs for key in present):
            continue
        size = theirs[present[0]].shape[0]
        parts = [theirs[key] if key is not None else theirs[present[0]].new_zeros(size) for key in their_keys]
        state[our_key] = torch.cat(parts, dim=0).reshape(shapes[our_key])
        used.update(present)
    return state, used


def vit_from_transformers(source: PreTrainedModel, keep_decoder: bool = False) -> SSLViTModel:
    """`SSLViTModel` with the weights of a `transformers` ViT of a class in `LAYOUTS`. A tensor of the source that
    has no place in our ViT is an error, except the layout's `dropped` ones, which are named in a warning (MAE's
    decoder only when `keep_decoder` is False)."""
    cls = source_class(source)
    layout = LAYOUTS[cls]
    config = ssl_vit_config(source.config, layout)
    source_state = source.state_dict()
    theirs = {key[len(layout.prefix):]: value for key, value in source_state.items() if key.startswith(layout.prefix)}
    with no_init_weights():
        model = SSLViTModel(config)
    expected = model.state_dict()
    state, used = import_state(theirs, vit_key_map(config, cls), {k: v.shape for k, v in expected.items()})
    missing = sorted(expected.keys() - state.keys() - {"embeddings.mask_token"})
    if missing:
        raise ValueError(f"the {type(source).__name__} lacks tensors of our ViT: {missing[:8]}")
    state.setdefault("embeddings.mask_token", torch.zeros_like(expected["embeddings.mask_token"]))

    dropped = {}
    for key in source_state.keys() - {layout.prefix + key for key in used}:
        reason = next((why for start, why in layout.dropped.items() if key.startswith(start)), None)
        if reason is None:
            raise ValueError(
                f"{type(source).__name__} tensor {key!r} has no place in hf_ssl's ViT, refusing to drop it"
            )
        dropped.setdefault(reason, []).append(key)
    for reason, keys in dropped.items():
        if not (keep_decoder and keys[0].startswith("decoder.")):
            logger.warning(f"not imported from {type(source).__name__}: {len(keys)} tensor(s) of {reason}")
    model.load_state_dict(state, strict=True)
    return model.to(next(iter(theirs.values())).dtype).eval()


def wrap(backbone: PreTrainedModel, model_class: type[PreTrainedModel], **settings) -> PreTrainedModel:
    """A method's feature model (an `SSLModel` subclass such as `DinoModel`) around `backbone`'s weights;
    `settings` are fields of the method's config."""
    if not (isinstance(model_class, type) and issubclass(model_class, SSLModel)):
        raise TypeError(f"model_class must be an SSLModel subclass such as DinoModel, got {model_class!r}")
    with no_init_weights():
        model = model_class(model_class.config_class(backbone_config=backbone.config, **settings))
    model.load_state_dict({f"backbone.{key}": value for key, value in backbone.state_dict().items()}, strict=True)
    return model.to(backbone.dtype).eval()


# ViTMAEConfig field -> MaeConfig field, carried over when a ViTMAE model becomes MaeForPreTraining.
MAE_SETTINGS = {
    "mask_ratio": "mask_ratio",
    "norm_pix_loss": "norm_pix_loss",
    "decoder_hidden_size": "decoder_hidden_size",
    "decoder_num_hidden_layers": "decoder_num_hidden_layers",
    "decoder_num_attention_heads": "decoder_num_attention_heads",
}
# Our MAE decoder's modules -> ViTMAE's (under `decoder.`), besides the blocks.
MAE_DECODER_KEYS = {"embed": "decoder_embed", "norm": "decoder_norm", "pred": "decoder_pred"}


def pretraining_from_backbone(
    backbone: PreTrainedModel, model_class: type[PreTrainedModel], source: PreTrainedModel, **settings
) -> PreTrainedModel:
    """`model_class` (a method's pretraining model) with `backbone`'s weights in every encoder it holds (student
    and EMA teacher), MAE's decoder from a `ViTMAEForPreTraining` source, other heads initialised."""
    from ..modeling.heads import MAEDecoder

    config_class = model_class.config_class
    if isinstance(source.config, ViTMAEConfig):
        source_config = source.config
        defaults = {ours: getattr(source_config, theirs) for theirs, ours in MAE_SETTINGS.items()}
        defaults["decoder_mlp_ratio"] = source_config.decoder_intermediate_size / source_config.decoder_hidden_size
        settings = {**{k: v for k, v in defaults.items() if hasattr(config_class, k)}, **settings}
    model = model_class(config_class(backbone_config=backbone.config, **settings))
    encoders = [module for module in model.modules() if isinstance(module, SSLModel)]
    if not encoders:
        raise TypeError(f"{model_class.__name__} holds no hf_ssl encoder (SSLModel) to import into")
    for encoder in encoders:
        encoder.backbone.load_state_dict(backbone.state_dict(), strict=True)
    decoder = getattr(model, "decoder", None)
    if isinstance(source, ViTMAEForPreTraining) and isinstance(decoder, MAEDecoder):
        decoder.load_state_dict(mae_decoder_state(source, backbone.config), strict=True)
    elif isinstance(decoder, MAEDecoder):
        logger.warning(f"{type(source).__name__} has no MAE decoder: {model_class.__name__}'s decoder is initialised")
    return model.to(backbone.dtype).eval()


def mae_decoder_state(source: ViTMAEForPreTraining, backbone_config: SSLViTConfig) -> dict[str, torch.Tensor]:
    """ViTMAE's decoder in our `MAEDecoder` names: the blocks through the ViT layout's table; the position table
    without its CLS row, which ViTMAE keeps at zero (refused otherwise: our decoder gives prefix tokens none)."""
    config = source.config
    if config.hidden_act != "gelu":
        raise ValueError(f"our MAE decoder uses exact GELU, the ViTMAE decoder {config.hidden_act!r}")
    theirs = {key[len("decoder."):]: value for key, value in source.state_dict().items() if key.startswith("decoder.")}
    positions = theirs["decoder_pos_embed"]
    if positions[:, 0].abs().max() != 0:
        raise ValueError("the ViTMAE decoder's CLS position is not zero: our MAE decoder gives the CLS token none")
    block_config = SSLViTConfig(
        image_size=1, patch_size=1, hidden_size=config.decoder_hidden_size,
        num_hidden_layers=config.decoder_num_hidden_layers, num_attention_heads=config.decoder_num_attention_heads,
        mlp_ratio=config.decoder_intermediate_size / config.decoder_hidden_size, qkv_bias=config.qkv_bias,
    )
    key_map = {
        "mask_token": ("mask_token",),
        **{f"{ours}.{param}": (f"{their}.{param}",) for ours, their in MAE_DECODER_KEYS.items()
           for param in ("weight", "bias")},
        **block_key_map(block_config, LAYOUTS[ViTMAEModel], ours="layers.{}.", theirs="decoder_layers.{}."),
    }
    shapes = {key: torch.Size([sum(theirs[k].shape[0] for k in keys), *theirs[keys[0]].shape[1:]])
              for key, keys in key_map.items() if all(k in theirs for k in keys)}
    state, used = import_state(theirs, key_map, shapes)
    state["position_embeddings"] = positions[:, 1:]
    leftover = sorted(theirs.keys() - used - {"decoder_pos_embed"})
    if leftover or len(state) != len(key_map) + 1:
        raise ValueError(f"ViTMAE decoder tensors without a place in our MAE decoder: {leftover[:8]}")
    return state


def ssl_vit_config(config, layout: Layout | type[PreTrainedModel]) -> SSLViTConfig:
    """Our ViT config for the config of a class in `LAYOUTS`; a `ValueError` for what our ViT cannot compute
    (BEiT's relative position bias, its norm after mean pooling, no absolute position embeddings)."""
    layout = LAYOUTS[layout] if isinstance(layout, type) else layout
    for name in ("image_size", "patch_size"):
        if not isinstance(getattr(config, name), int):
            raise ValueError(f"only square {name} can be imported, got {getattr(config, name)}")
    extra = {}
    if isinstance(config, (BeitConfig, Data2VecVisionConfig)):
        if config.use_relative_position_bias or config.use_shared_relative_position_bias:
            raise ValueError(
                f"{type(config).__name__} with relative position bias: hf_ssl's ViT has none, so this model cannot "
                "be imported exactly (only models with use_absolute_position_embeddings and no relative bias can)"
            )
        if not config.use_absolute_position_embeddings:
            raise ValueError(f"{type(config).__name__} without absolute position embeddings cannot be imported")
        if config.use_mean_pooling:
            raise ValueError(
                f"{type(config).__name__} with use_mean_pooling=True has no final norm on its tokens but a norm after "
                "the mean (pooler.layernorm), which hf_ssl's ViT does not have: it cannot be imported exactly"
            )
        if config.layer_scale_init_value > 0:
            extra["layerscale_value"] = config.layer_scale_init_value
    if isinstance(config, (Dinov2Config, Dinov2WithRegistersConfig)):
        extra = dict(
            mlp_ratio=config.mlp_ratio,
            use_swiglu_ffn=config.use_swiglu_ffn,
            layerscale_value=config.layerscale_value,
            drop_path_uniform=True,
            num_register_tokens=getattr(config, "num_register_tokens", 0),
        )
    else:
        mlp_ratio = config.intermediate_size / config.hidden_size
        if int(config.hidden_size * mlp_ratio) != config.intermediate_size:
            raise ValueError(f"intermediate_size {config.intermediate_size} is not expressible as an MLP ratio")
        extra["mlp_ratio"] = mlp_ratio
    return SSLViTConfig(
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_channels=config.num_channels,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        hidden_act=config.hidden_act,
        qkv_bias=getattr(config, "qkv_bias", True),
        layer_norm_eps=config.layer_norm_eps,
        initializer_range=config.initializer_range,
        drop_path_rate=getattr(config, "drop_path_rate", 0.0),
        use_cls_token=not isinstance(config, IJepaConfig),
        position_embedding_type=layout.position_embedding_type,
        interpolate_offset=0.0,
        interpolate_antialias=layout.antialias,
        pooling=layout.pooling,
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
