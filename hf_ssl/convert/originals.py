"""Original research checkpoints -> hf_ssl models: one `Converter` per method in a small registry.

A converter says where the encoder the paper evaluates sits in the released files (`Source`: nested keys and a
key prefix, several layouts per method), which of the other keys are known not to be encoder weights (heads,
decoders), and how the model is built: the ViT settings the original uses (pooling, position-embedding
interpolation), the heads its architectures use, the method's model class. The weights go through one explicit key
map (`hf_ssl.convert.vit` for the timm-style ViTs, `hf_ssl.convert.resnet` for torchvision ResNets).

Nothing is dropped silently: every key under the encoder's prefix is either mapped or listed with the reason it is
not converted, an encoder key that fits nowhere is an error, and the result carries a report of what was used.

    conversion = convert("dino", "dino_deitsmall16_pretrain.pth")
    conversion.model                      # DinoModel: CLS after the final norm, DINO's interpolation
    save_conversion(conversion, "dino-vits16")
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.initialization import no_init_weights

from ..backbones import SSLResNetModel, SSLViTModel
from .checkpoint import Source, anchor_locations, load_checkpoint
from .resnet import resnet_state_dict_from_torchvision
from .vit import VIT_ARCHS, merge_beit_attention_bias, rename_vit_key, vit_config_from_state_dict

# A key every encoder of a family has, exactly once, to find the encoder's prefix.
ANCHORS = {"vit": "patch_embed.proj.weight", "resnet": "layer4.0.downsample.0.weight"}
# Our keys a checkpoint may lack: they are created (zeros) and reported.
OPTIONAL_KEYS = {"vit": ("embeddings.mask_token",), "resnet": ("num_batches_tracked",)}

VIT_HEAD = {"head.": "projection or classification head on top of the encoder"}
RESNET_FC = {"fc.": "classifier or projection head `fc` on top of the encoder"}
IMAGENET = ("ILSVRC/imagenet-1k",)


@dataclass(frozen=True)
class Converter:
    """How to convert one method's released checkpoints.

    Args:
        method: name on the command line (`hf-ssl convert <method>`).
        title: the method and its paper, for reports and model cards.
        files: names of the released files it reads.
        encoders: encoder name -> where it can sit (tried in order); the first name is the default, the encoder
            the paper evaluates.
        families: backbone families the method released (`"vit"`, `"resnet"`).
        ignored: key prefix (after the encoder prefix) -> why those tensors are not part of the encoder.
        model_types: hf_ssl method `model_type`s the encoder is wrapped in (the first registered one); the bare
            backbone where none is registered yet.
        vit_settings: `SSLViTConfig` fields the original's ViT needs (pooling, interpolation).
        register_settings: extra fields for models with register tokens.
        arch_overrides: changes to `VIT_ARCHS` for this method (MoCo v3's ViT-S has 12 heads).
        processor: `processor_for` overrides.
        license: the license of the released weights.
        datasets: Hub ids of the pretraining data.
        notes: what a user must know about the converted features.
        pretraining: builds the full pretraining model (heads, teacher) from a full training checkpoint.
    """

    method: str
    title: str
    files: tuple[str, ...]
    encoders: dict[str, tuple[Source, ...]]
    families: tuple[str, ...] = ("vit",)
    ignored: dict[str, str] = field(default_factory=dict)
    model_types: tuple[str, ...] = ()
    vit_settings: dict = field(default_factory=dict)
    register_settings: dict = field(default_factory=dict)
    arch_overrides: dict[str, dict] = field(default_factory=dict)
    processor: dict = field(default_factory=dict)
    license: str | None = None
    datasets: tuple[str, ...] = IMAGENET
    notes: str = ""
    pretraining: Callable | None = None

    @property
    def archs(self) -> dict[str, dict]:
        return {name: {**spec, **self.arch_overrides.get(name, {})} for name, spec in VIT_ARCHS.items()}


@dataclass
class Conversion:
    """A converted model and the report of what the checkpoint held and what was used."""

    model: PreTrainedModel
    converter: Converter
    report: dict


def _sources(*layouts: tuple[tuple[str, ...], str]) -> tuple[Source, ...]:
    return tuple(Source(container, prefix) for container, prefix in layouts)


def _dino_pretraining(*args, **kwargs):
    from .dino import dino_pretraining

    return dino_pretraining(*args, **kwargs)


LEARNED_DINO = dict(pooling="cls", interpolate_offset=0.1, interpolate_antialias=False)
FIXED_SINCOS = dict(position_embedding_type="sincos", interpolate_offset=0.0)

CONVERTERS: dict[str, Converter] = {c.method: c for c in (
    Converter(
        "dino", "DINO (Caron et al., 2021, arXiv:2104.14294)",
        ("dino_deitsmall16_pretrain.pth", "dino_vitbase16_pretrain.pth", "dino_resnet50_pretrain.pth",
         "checkpoint.pth"),
        encoders={
            "teacher": _sources((("teacher",), "backbone."), (("teacher",), "module.backbone."), ((), "")),
            "student": _sources((("student",), "module.backbone."), (("student",), "backbone.")),
        },
        families=("vit", "resnet"), ignored={**VIT_HEAD, **RESNET_FC}, model_types=("dino",),
        vit_settings=LEARNED_DINO, license="apache-2.0", pretraining=_dino_pretraining,
        notes="pooler_output is the CLS token after the final norm (ViT) or the global average pool (ResNet), the "
              "features DINO evaluates; other input sizes interpolate the position table like DINO (offset 0.1).",
    ),
    Converter(
        "dinov2", "DINOv2 (Oquab et al., 2023, arXiv:2304.07193); registers (Darcet et al., 2023, arXiv:2309.16588)",
        ("dinov2_vits14_pretrain.pth", "dinov2_vits14_reg4_pretrain.pth", "teacher_checkpoint.pth"),
        encoders={"teacher": _sources((("teacher",), "backbone."), ((), ""), (("model",), ""))},
        model_types=("dinov2_ssl", "ssl_dinov2"),
        vit_settings=dict(pooling="cls", interpolate_offset=0.1, interpolate_antialias=False),
        register_settings=dict(interpolate_offset=0.0, interpolate_antialias=True),
        processor=dict(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}),
        license="apache-2.0", datasets=(),
        notes="pooler_output is the CLS token after the final norm (x_norm_clstoken); registers are never pooled. "
              "The released models are 518-px configs: 224-px inputs interpolate the position table as DINOv2 does "
              "(offset 0.1 without registers; exact size with antialias with registers).",
    ),
    Converter(
        "ibot", "iBOT (Zhou et al., 2022, arXiv:2111.07832)",
        ("checkpoint_teacher.pth", "checkpoint.pth"),
        encoders={
            "teacher": _sources((("teacher",), "backbone."), (("state_dict",), ""), (("state_dict",), "backbone."),
                                ((), "")),
            "student": _sources((("student",), "module.backbone."),),
        },
        ignored=VIT_HEAD, model_types=("ibot",), vit_settings=LEARNED_DINO, license="apache-2.0",
        notes="pooler_output is the teacher's CLS token after the final norm; DINO's interpolation (offset 0.1).",
    ),
    Converter(
        "mae", "MAE (He et al., 2022, arXiv:2111.06377)",
        ("mae_pretrain_vit_base.pth", "mae_visualize_vit_base.pth"),
        encoders={"encoder": _sources((("model",), ""), ((), ""))},
        ignored={
            "decoder_": "MAE decoder: not converted (no hf_ssl MAE pretraining model to hold it yet)",
            "mask_token": "MAE decoder's mask token: not converted with the decoder",
            **VIT_HEAD,
        },
        model_types=("mae",), vit_settings=dict(pooling="mean", **FIXED_SINCOS), license="cc-by-nc-4.0",
        notes="pooler_output is the mean of the patch tokens after the final norm (MAE fine-tunes on global-pooled "
              "patch tokens, through a new norm that is not in the file); MAE's linear probe uses the CLS token, "
              "last_hidden_state[:, 0]. The original has no runtime interpolation (fixed 2-D sin-cos table).",
    ),
    Converter(
        "mocov3", "MoCo v3 (Chen, Xie and He, 2021, arXiv:2104.02057)",
        ("vit-s-300ep.pth.tar", "vit-b-300ep.pth.tar"),
        encoders={
            "base_encoder": _sources((("state_dict",), "module.base_encoder."), (("state_dict",), "base_encoder.")),
            "momentum_encoder": _sources((("state_dict",), "module.momentum_encoder."),
                                         (("state_dict",), "momentum_encoder.")),
        },
        ignored=VIT_HEAD, model_types=("mocov3",), vit_settings=dict(pooling="cls", **FIXED_SINCOS),
        arch_overrides={"vit_small": dict(num_attention_heads=12)}, license="cc-by-nc-4.0",
        notes="pooler_output is the CLS token after the final norm. MoCo v3's ViT-S has 12 heads (head dim 32). The "
              "original has no runtime interpolation (fixed 2-D sin-cos table, taken from the file).",
    ),
    Converter(
        "msn", "MSN (Assran et al., 2022, arXiv:2204.07141)",
        ("vits16_800ep.pth.tar", "vitb16_600ep.pth.tar", "vitl7_200ep.pth.tar"),
        encoders={
            "target_encoder": _sources((("target_encoder",), "module."), (("target_encoder",), "")),
            "encoder": _sources((("encoder",), "module."), (("encoder",), "")),
        },
        ignored={"fc.": "MSN projection head"}, model_types=("msn",),
        vit_settings=dict(pooling="cls", interpolate_offset=0.0), license="cc-by-nc-4.0",
        notes="pooler_output is the CLS token after the final norm (as transformers' ViTMSNModel); MSN's own "
              "evaluation uses the last block's CLS token without the final norm: "
              "output_hidden_states=True, hidden_states[-1][:, 0].",
    ),
    Converter(
        "ijepa", "I-JEPA (Assran et al., 2023, arXiv:2301.08243)",
        ("IN1K-vit.h.14-300e.pth.tar", "IN22K-vit.g.16-600e.pth.tar"),
        encoders={
            "target_encoder": _sources((("target_encoder",), "module."), (("target_encoder",), "")),
            "encoder": _sources((("encoder",), "module."), (("encoder",), "")),
        },
        model_types=("ijepa_ssl", "ssl_ijepa"), vit_settings=dict(pooling="mean", **FIXED_SINCOS),
        license="cc-by-nc-4.0",
        notes="I-JEPA has no CLS token: pooler_output is the mean of all tokens after the final norm. The original "
              "cannot run off its native grid; this model interpolates the sin-cos table there.",
    ),
    Converter(
        "beit", "BEiT (Bao et al., 2022, arXiv:2106.08254)",
        ("beit_base_patch16_224_pt22k.pth",),
        encoders={"model": _sources((("model",), ""), (("module",), ""), ((), ""))},
        ignored={"lm_head.": "BEiT's masked-image-modeling head over the visual tokens"},
        model_types=("beit_ssl",), vit_settings=dict(pooling="mean", interpolate_offset=0.0), license="mit",
        notes="Only BEiT models with absolute position embeddings (use_abs_pos_emb) and no relative position bias "
              "convert: hf_ssl's ViT has no relative position bias, and the released BEiT checkpoints use a shared "
              "one, so they are refused. pooler_output is the mean of the patch tokens after the final norm.",
    ),
    Converter(
        "data2vec", "data2vec (Baevski et al., 2022, arXiv:2202.03555), vision, BEiT-based release",
        ("data2vec_vision_base_pt.pth",),
        encoders={"model": _sources((("model",), ""), (("module",), ""), ((), ""))},
        ignored={"lm_head.": "data2vec's regression head", "final_proj.": "data2vec's regression head"},
        model_types=("data2vec_ssl",), vit_settings=dict(pooling="mean", interpolate_offset=0.0), license="mit",
        notes="data2vec-vision is written on BEiT's code (same keys): only models with absolute position "
              "embeddings and no relative position bias convert (the released ones use a shared relative bias and "
              "are refused). pooler_output is the mean of the patch tokens after the final norm.",
    ),
    Converter(
        "moco", "MoCo v1/v2 (He et al., 2020, arXiv:1911.05722; Chen et al., 2020, arXiv:2003.04297)",
        ("moco_v1_200ep_pretrain.pth.tar", "moco_v2_800ep_pretrain.pth.tar"),
        encoders={
            "encoder_q": _sources((("state_dict",), "module.encoder_q."), (("state_dict",), "encoder_q.")),
            "encoder_k": _sources((("state_dict",), "module.encoder_k."), (("state_dict",), "encoder_k.")),
        },
        families=("resnet",), ignored=RESNET_FC, model_types=("moco", "mocov2"), license="cc-by-nc-4.0",
    ),
    Converter(
        "simsiam", "SimSiam (Chen and He, 2021, arXiv:2011.10566)", ("checkpoint_0099.pth.tar",),
        encoders={"encoder": _sources((("state_dict",), "module.encoder."), (("state_dict",), "encoder."))},
        families=("resnet",), ignored=RESNET_FC, model_types=("simsiam",), license="cc-by-nc-4.0",
    ),
    Converter(
        "swav", "SwAV (Caron et al., 2020, arXiv:2006.09882)", ("swav_800ep_pretrain.pth.tar",),
        encoders={"encoder": _sources(((), "module."), (("state_dict",), "module."), ((), ""))},
        families=("resnet",),
        ignored={**RESNET_FC, "projection_head.": "SwAV projection head", "prototypes.": "SwAV prototypes"},
        model_types=("swav",), license="cc-by-nc-4.0",
    ),
    Converter(
        "barlowtwins", "Barlow Twins (Zbontar et al., 2021, arXiv:2103.03230)", ("resnet50.pth", "checkpoint.pth"),
        encoders={"backbone": _sources(((), ""), (("model",), "module.backbone."), (("model",), "backbone."))},
        families=("resnet",), ignored=RESNET_FC, model_types=("barlow_twins", "barlowtwins"), license="mit",
    ),
    Converter(
        "vicreg", "VICReg (Bardes, Ponce and LeCun, 2022, arXiv:2105.04906)", ("resnet50.pth", "model.pth"),
        encoders={"backbone": _sources(((), ""), (("model",), "module.backbone."), (("model",), "backbone."))},
        families=("resnet",), ignored=RESNET_FC, model_types=("vicreg",), license="mit",
    ),
    Converter(
        "byol", "BYOL (Grill et al., 2020, arXiv:2006.07733), torchvision-converted",
        ("pretrain_res50x1.pth",),
        encoders={"encoder": _sources(((), ""), (("state_dict",), ""), (("state_dict",), "module."), ((), "module."))},
        families=("resnet",), ignored=RESNET_FC, model_types=("byol",), license="apache-2.0",
    ),
    Converter(
        "simclr", "SimCLR (Chen et al., 2020, arXiv:2002.05709), torchvision-converted",
        ("resnet50-1x.pth", "resnet50-2x.pth", "resnet50-4x.pth"),
        encoders={"encoder": _sources(((), ""), (("state_dict",), ""), (("state_dict",), "module."), ((), "module."))},
        families=("resnet",), ignored=RESNET_FC, model_types=("simclr",), license="apache-2.0",
    ),
)}


def get_converter(method: str) -> Converter:
    if method not in CONVERTERS:
        raise ValueError(f"no converter for {method!r}; choose one of {', '.join(CONVERTERS)}")
    return CONVERTERS[method]


def resolve_model_class(model_types: tuple[str, ...]) -> type[PreTrainedModel] | None:
    """The feature model (`<M>Model`) of the first of `model_types` that hf_ssl registers, if any."""
    from ..auto import MODELS

    registered = {config_class.model_type: model_class for config_class, model_class, _, _ in MODELS}
    return next((registered[name] for name in model_types if name in registered), None)


def find_encoder(converter: Converter, checkpoint: dict, encoder: str | None = None) -> tuple[str, Source]:
    """(family, source) of the requested encoder; a `ValueError` saying what the file holds where it has none."""
    encoder = encoder or next(iter(converter.encoders))
    if encoder not in converter.encoders:
        raise ValueError(f"{converter.method} has no encoder {encoder!r}; choose one of {list(converter.encoders)}")
    for family in converter.families:
        for source in converter.encoders[encoder]:
            if source.matches(checkpoint, ANCHORS[family]):
                return family, source

    expected = "; ".join(source.describe() for source in converter.encoders[encoder])
    found = [f"{family} weights at {source.describe()}" for family in ANCHORS
             for source in anchor_locations(checkpoint, ANCHORS[family])]
    lines = [
        f"this is not a {converter.method} checkpoint with a {encoder!r} encoder: expected "
        f"{'/'.join(converter.families)} weights at {expected}.",
        f"The file's top-level keys: {sorted(map(str, checkpoint))[:12]}.",
        f"It holds {', '.join(found)}." if found else "It holds no ViT or ResNet weights that hf-ssl recognises.",
    ]
    others = [other.method for other in CONVERTERS.values() if other is not converter and any(
        source.matches(checkpoint, ANCHORS[family])
        for family in other.families for sources in other.encoders.values() for source in sources
    )]
    if others:
        lines.append(f"It looks like a checkpoint of: {', '.join(others)} (hf-ssl convert {others[0]} ...).")
    raise ValueError(" ".join(lines))


def split_encoder_keys(
    state_dict: dict[str, torch.Tensor], prefix: str, ignored: dict[str, str]
) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """The tensors under `prefix` (prefix stripped) that may be encoder weights, and the keys that are not, grouped
    by the reason: outside the prefix, or under one of the `ignored` prefixes."""
    weights, unused = {}, {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            unused.setdefault(f"outside the encoder prefix {prefix!r}", []).append(key)
            continue
        name = key[len(prefix):]
        reason = next((why for start, why in ignored.items() if name.startswith(start)), None)
        if reason is None:
            weights[name] = value
        else:
            unused.setdefault(reason, []).append(key)
    return weights, {reason: sorted(keys) for reason, keys in unused.items()}


def vit_encoder_state(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original ViT keys -> ours; a `ValueError` naming the keys that are no part of our ViT."""
    renamed, unmapped = {}, []
    for key, value in weights.items():
        ours = rename_vit_key(key)
        if ours is None:
            unmapped.append(key)
        elif ours in renamed:
            raise ValueError(f"two checkpoint tensors map to {ours} (one of them {key!r})")
        else:
            renamed[ours] = value
    relative = [key for key in unmapped if "relative_position" in key]
    if relative:
        raise ValueError(
            f"the encoder uses a relative position bias ({relative[0]!r}, BEiT/data2vec's use_rel_pos_bias or "
            "use_shared_rel_pos_bias): hf_ssl's ViT has none, so it cannot be converted exactly; only models trained "
            "with absolute position embeddings (pos_embed) and no relative bias can"
        )
    if any(key.startswith("fc_norm.") for key in unmapped):
        raise ValueError(
            "the encoder has `fc_norm`, a norm after mean pooling (a fine-tuned BEiT/data2vec model): hf_ssl's ViT "
            "normalises tokens before pooling, so it cannot be converted exactly; convert the pretraining checkpoint"
        )
    if unmapped:
        raise ValueError(
            f"{len(unmapped)} encoder tensor(s) have no place in hf_ssl's ViT, refusing to drop them: {unmapped[:8]}"
        )
    return merge_beit_attention_bias(renamed)


def build_backbone_from_weights(
    family: str, weights: dict[str, torch.Tensor], config: PreTrainedConfig
) -> tuple[PreTrainedModel, list[str]]:
    """Our backbone for `config` holding `weights` (our key names), and the optional keys that were created."""
    model_class = SSLViTModel if family == "vit" else SSLResNetModel
    with no_init_weights():
        model = model_class(config)
    expected = model.state_dict()
    missing = sorted(expected.keys() - weights.keys())
    required = [key for key in missing if not any(key.endswith(optional) for optional in OPTIONAL_KEYS[family])]
    if required:
        raise ValueError(f"the checkpoint lacks {len(required)} encoder tensor(s): {required[:8]}")
    extra = sorted(weights.keys() - expected.keys())
    if extra:
        raise ValueError(f"{len(extra)} checkpoint tensor(s) have no place in the model: {extra[:8]}")
    state = {**{key: torch.zeros_like(expected[key]) for key in missing}, **weights}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"the checkpoint's tensors do not fit the inferred architecture: {error}") from error
    return model.eval(), missing


def encoder_from_weights(
    converter: Converter,
    family: str,
    weights: dict[str, torch.Tensor],
    arch: str | None = None,
    num_heads: int | None = None,
    patch_size: int | None = None,
    **settings,
) -> tuple[PreTrainedModel, list[str]]:
    """The backbone of one encoder's original weights (prefix stripped, heads removed); `settings` override the
    converter's `SSLViTConfig` fields (e.g. `drop_path_rate` for continued pretraining)."""
    if family == "vit":
        state = vit_encoder_state(weights)
        vit_settings = dict(converter.vit_settings)
        if "embeddings.register_tokens" in state:
            if not converter.register_settings:
                raise ValueError(f"{converter.method} models have no register tokens; a DINOv2-with-registers "
                                 "checkpoint? (hf-ssl convert dinov2 ...)")
            vit_settings.update(converter.register_settings)
        config = vit_config_from_state_dict(
            state, converter.archs, arch=arch, num_heads=num_heads, patch_size=patch_size,
            **{**vit_settings, **settings},
        )
        return build_backbone_from_weights("vit", state, config)
    result = resnet_state_dict_from_torchvision(weights)
    if result.unexpected_keys:
        raise ValueError(
            f"{len(result.unexpected_keys)} encoder tensor(s) have no place in a torchvision ResNet, refusing to drop "
            f"them: {result.unexpected_keys[:8]}"
        )
    return build_backbone_from_weights("resnet", result.state_dict, result.config)


def convert(
    method: str,
    checkpoint: str | os.PathLike | dict,
    encoder: str | None = None,
    arch: str | None = None,
    num_heads: int | None = None,
    patch_size: int | None = None,
    encoder_only: bool = False,
) -> Conversion:
    """
    Convert an original checkpoint (a path or an already loaded dict) of `method` (see `CONVERTERS`).

    Returns the method's feature model (e.g. `DinoModel`, or the bare `SSLViTModel`/`SSLResNetModel` where hf_ssl
    has no class for the method yet) holding `encoder` (default: the one the paper evaluates). A full training
    checkpoint of a method with a `pretraining` builder (DINO's `checkpoint.pth`) gives the pretraining model with
    its heads instead, unless `encoder_only` or another `encoder` is asked for; `AutoModel` loads the evaluated
    encoder of that model.
    `arch`/`num_heads` give what the file does not store (the heads); `patch_size` is checked against the file.
    """
    converter = get_converter(method)
    path = None if isinstance(checkpoint, dict) else Path(checkpoint)
    if path is not None:
        checkpoint = load_checkpoint(path)
    family, source = find_encoder(converter, checkpoint, encoder)
    default_encoder = next(iter(converter.encoders))
    encoder = encoder or default_encoder
    weights, unused = split_encoder_keys(source.state_dict(checkpoint), source.prefix, converter.ignored)
    args = checkpoint.get("args")
    args = vars(args) if hasattr(args, "__dict__") else {}
    recorded_arch = args.get("arch", checkpoint.get("arch"))  # DINO/iBOT/MAE keep it in args, MoCo v3 at the top
    if arch is None and num_heads is None and family == "vit" and isinstance(recorded_arch, str) \
            and recorded_arch in converter.archs:
        arch = recorded_arch
    backbone, created = encoder_from_weights(converter, family, weights, arch, num_heads, patch_size)

    model, extra_report = None, {}
    if converter.pretraining is not None and not encoder_only and encoder == default_encoder:
        built = converter.pretraining(
            checkpoint, args, lambda weights, **settings: encoder_from_weights(
                converter, family, weights, arch, num_heads, patch_size, **settings)[0],
        )
        if built is not None:
            model, extra_report = built
            unused = {}  # the builder converts every tensor of the student and the teacher, or raises
    if model is None:
        model_class = resolve_model_class(converter.model_types)
        if model_class is not None:
            from .export import wrap

            model = wrap(backbone, model_class)
        else:
            model = backbone

    container = source.container[0] if source.container else None
    report = {
        "method": converter.method,
        "title": converter.title,
        "checkpoint": path.name if path is not None else None,
        "encoder": encoder,
        "source": source.describe(),
        "family": family,
        "model_class": type(model).__name__,
        "backbone_config": backbone.config.to_diff_dict(),
        "converted_tensors": len(weights),
        "created_tensors": created,
        "unused_tensors": unused,
        "other_entries": sorted(str(key) for key in checkpoint if key != container) if container else [],
        "license": converter.license,
        "datasets": list(converter.datasets),
        "notes": converter.notes,
        **extra_report,
    }
    return Conversion(model=model, converter=converter, report=report)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_output_folder(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    return out_dir


def save_conversion(
    conversion: Conversion, out_dir: str | os.PathLike, overwrite: bool = False, checkpoint_path=None
) -> Path:
    """Write the model (safetensors + config), its image processor and `conversion.json` (the report) to `out_dir`.
    Everything is written to a temporary folder beside it and renamed into place: never half-written."""
    from ..processing import processor_for

    out_dir = check_output_folder(out_dir, overwrite)
    report = dict(conversion.report)
    if checkpoint_path is not None:
        report["checkpoint_sha256"] = _sha256(Path(checkpoint_path))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        conversion.model.save_pretrained(staging)
        processor_for(conversion.model.config, **conversion.converter.processor).save_pretrained(staging)
        (staging / "conversion.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.replace(out_dir, old)
            os.replace(staging, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def convert_to_folder(
    method: str, checkpoint: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False, **options
) -> Conversion:
    """`convert` then `save_conversion`; the output folder is checked first, so a refused overwrite costs nothing."""
    check_output_folder(out_dir, overwrite)
    conversion = convert(method, checkpoint, **options)
    save_conversion(conversion, out_dir, overwrite=overwrite, checkpoint_path=checkpoint)
    return conversion
