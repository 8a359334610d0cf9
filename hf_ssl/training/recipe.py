"""Recipes: a YAML file of six sections (model, views, data, optim, train, eval), command-line overrides, and
validation that names the offending field before any training starts.

`model` and `views` are free dicts checked by their own builders (the method config rejects a bad temperature,
`build_views` a bad crop size); the other sections are dataclasses, so an unknown key is an error.
"""

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .optim import OPTIMIZERS
from .schedules import LR_SCALINGS

MIXED_PRECISIONS = ("no", "fp16", "bf16")


@dataclass
class DataSection:
    """Where the images come from (see `hf_ssl.data.load_dataset_for_pretraining`)."""

    dataset: str = "fashion_mnist"
    split: str = "train"
    image_column: str | None = None
    streaming: bool = False
    num_workers: int = 2
    max_samples: int | None = None


@dataclass
class OptimSection:
    """Optimizer, learning-rate and weight-decay schedules. `lr` is per `base_batch_size` images."""

    optimizer: str = "adamw"
    lr: float = 5.0e-4
    lr_scaling: str = "linear"
    base_batch_size: int = 256
    min_lr: float = 1.0e-6
    warmup_epochs: float = 10
    warmup_steps: int | None = None
    weight_decay: float = 0.04
    weight_decay_end: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1.0e-8
    momentum: float = 0.9
    trust_coefficient: float = 0.001
    clip_grad: float | None = 3.0
    layer_decay: float | None = None
    patch_embed_lr_mult: float = 1.0


@dataclass
class TrainSection:
    """Batching, length, precision, checkpoints and logging. `batch_size` is per process; `global_batch_size`, when
    set, replaces it by global / (processes x accumulation steps). `max_steps` wins over `epochs`.
    `find_unused_parameters` is DDP's, for models with trainable parameters that some steps do not use."""

    batch_size: int = 64
    global_batch_size: int | None = None
    epochs: float | None = 100
    max_steps: int | None = None
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    seed: int = 0
    output_dir: str = "outputs/run"
    checkpoint_every: int = 1000
    keep_last: int = 2
    log_every: int = 10
    monitor_every: int = 100
    log_with: str | None = "auto"
    progress_bar: bool = True
    compile: bool = False
    sync_batchnorm: bool = False
    find_unused_parameters: bool = False
    allow_nonfinite_skip: bool = False


@dataclass
class EvalSection:
    """Optional evaluation at the end: `knn` holds the keyword arguments of `hf_ssl.evaluation.knn.knn_eval`
    (`split` is accepted for `test_split`) plus `compare_random_init`."""

    knn: dict | None = None


SECTIONS = {"data": DataSection, "optim": OptimSection, "train": TrainSection, "eval": EvalSection}


@dataclass
class Recipe:
    model: dict = field(default_factory=dict)
    views: dict = field(default_factory=dict)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)

    @classmethod
    def from_dict(cls, values: dict) -> "Recipe":
        if not isinstance(values, dict):
            raise TypeError(f"a recipe is a mapping of sections, got {type(values).__name__}")
        unknown = set(values) - {"model", "views", *SECTIONS}
        if unknown:
            raise ValueError(
                f"unknown recipe section(s) {sorted(unknown)}; sections are model, views, {', '.join(SECTIONS)}"
            )
        sections = {}
        for name, section_class in SECTIONS.items():
            section = values.get(name) or {}
            if not isinstance(section, dict):
                raise TypeError(f"recipe section {name!r} must be a mapping, got {type(section).__name__}")
            known = {f.name for f in dataclasses.fields(section_class)}
            for key in section:
                if key not in known:
                    raise ValueError(f"unknown field {name}.{key}; known fields: {', '.join(sorted(known))}")
            hints = typing.get_type_hints(section_class)
            for key, value in section.items():
                _check_type(f"{name}.{key}", value, hints[key])
            sections[name] = section_class(**section)
        for name in ("model", "views"):
            if not isinstance(values.get(name) or {}, dict):
                raise TypeError(f"recipe section {name!r} must be a mapping, got {type(values[name]).__name__}")
        return cls(model=dict(values.get("model") or {}), views=dict(values.get("views") or {}), **sections)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise `ValueError` naming the first bad field and its allowed range; the `model` and `views` sections are
        checked by building them (cheap: a config and a transform, no weights)."""
        data, optim, train = self.data, self.optim, self.train
        if "model_type" not in self.model:
            raise ValueError(f"model.model_type is required; registered pretraining models: {_pretraining_types()}")
        if self.model["model_type"] not in _pretraining_types():
            raise ValueError(
                f"model.model_type {self.model['model_type']!r} has no registered pretraining model; "
                f"registered: {_pretraining_types()}"
            )
        if "type" not in self.views:
            raise ValueError("views.type is required (e.g. two_view, multi_crop)")
        _check(data.num_workers >= 0, "data.num_workers", data.num_workers, ">= 0")
        _check(data.max_samples is None or data.max_samples >= 1, "data.max_samples", data.max_samples, ">= 1")
        _check(optim.optimizer in OPTIMIZERS, "optim.optimizer", optim.optimizer, f"one of {OPTIMIZERS}")
        _check(optim.lr > 0, "optim.lr", optim.lr, "> 0")
        _check(optim.lr_scaling in LR_SCALINGS, "optim.lr_scaling", optim.lr_scaling, f"one of {LR_SCALINGS}")
        _check(optim.base_batch_size >= 1, "optim.base_batch_size", optim.base_batch_size, ">= 1")
        _check(optim.min_lr >= 0, "optim.min_lr", optim.min_lr, ">= 0")
        _check(optim.warmup_epochs >= 0, "optim.warmup_epochs", optim.warmup_epochs, ">= 0")
        _check(optim.warmup_steps is None or optim.warmup_steps >= 0, "optim.warmup_steps", optim.warmup_steps, ">= 0")
        _check(optim.weight_decay >= 0, "optim.weight_decay", optim.weight_decay, ">= 0")
        wd_end = optim.weight_decay_end
        _check(wd_end is None or wd_end >= 0, "optim.weight_decay_end", wd_end, ">= 0")
        _check(
            len(optim.betas) == 2 and all(0 <= b < 1 for b in optim.betas), "optim.betas", optim.betas, "two in [0, 1)"
        )
        _check(0 <= optim.momentum < 1, "optim.momentum", optim.momentum, "in [0, 1)")
        _check(optim.trust_coefficient > 0, "optim.trust_coefficient", optim.trust_coefficient, "> 0")
        _check(optim.clip_grad is None or optim.clip_grad >= 0, "optim.clip_grad", optim.clip_grad, ">= 0 or null")
        decay = optim.layer_decay
        _check(decay is None or 0 < decay <= 1, "optim.layer_decay", decay, "in (0, 1] or null")
        _check(optim.patch_embed_lr_mult > 0, "optim.patch_embed_lr_mult", optim.patch_embed_lr_mult, "> 0")
        _check(train.batch_size >= 1, "train.batch_size", train.batch_size, ">= 1")
        gbs = train.global_batch_size
        _check(gbs is None or gbs >= 1, "train.global_batch_size", gbs, ">= 1 or null")
        _check(
            train.epochs is not None or train.max_steps is not None, "train.epochs", train.epochs, "set (or max_steps)"
        )
        _check(train.epochs is None or train.epochs > 0, "train.epochs", train.epochs, "> 0")
        _check(train.max_steps is None or train.max_steps >= 1, "train.max_steps", train.max_steps, ">= 1")
        accum = train.gradient_accumulation_steps
        _check(accum >= 1, "train.gradient_accumulation_steps", accum, ">= 1")
        mp = train.mixed_precision
        _check(mp in MIXED_PRECISIONS, "train.mixed_precision", mp, f"one of {MIXED_PRECISIONS}")
        for name in ("checkpoint_every", "keep_last", "log_every", "monitor_every"):
            _check(getattr(train, name) >= 1, f"train.{name}", getattr(train, name), ">= 1")
        if self.eval.knn is not None and not isinstance(self.eval.knn, dict):
            raise ValueError(f"eval.knn must be a mapping of knn_eval arguments, got {self.eval.knn!r}")
        self._check_backbone_type()
        _check_builds("model", self.build_config)
        _check_builds("views", self._build_views)

    def _check_backbone_type(self) -> None:
        """An unknown `model.backbone_config.model_type` is named here, not as a bare `KeyError` from transformers."""
        from transformers import CONFIG_MAPPING

        import hf_ssl  # noqa: F401  (registers our backbone types)

        backbone = self.model.get("backbone_config")
        backbone_type = backbone.get("model_type") if isinstance(backbone, dict) else None
        if backbone_type is not None and backbone_type not in CONFIG_MAPPING:
            raise ValueError(
                f"model.backbone_config.model_type must be ssl_vit, ssl_resnet or a transformers vision model type, "
                f"got {backbone_type!r}"
            )

    def _build_views(self):
        from ..processing.views import build_views

        return build_views(**self.views)

    def per_process_batch_size(self, num_processes: int) -> int:
        """`train.batch_size`, or `global_batch_size / (num_processes * accumulation)` when that is set."""
        train = self.train
        if train.global_batch_size is None:
            return train.batch_size
        shards = num_processes * train.gradient_accumulation_steps
        if train.global_batch_size % shards:
            raise ValueError(
                f"train.global_batch_size={train.global_batch_size} must be divisible by processes x "
                f"gradient_accumulation_steps = {num_processes} x {train.gradient_accumulation_steps}"
            )
        return train.global_batch_size // shards

    def build_config(self):
        """The method config `AutoConfig.for_model(**model)`: its own validation (temperatures, sizes) runs here."""
        import hf_ssl  # noqa: F401  (registers our model types)
        from transformers import AutoConfig

        return AutoConfig.for_model(**self.model)


def _check_type(name: str, value: Any, annotation: Any) -> None:
    """TypeError unless `value` fits the field's annotation (an int is a float, a list a tuple)."""
    allowed = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (
        annotation,
    )
    classes = set()
    for option in allowed:
        option = typing.get_origin(option) or option
        classes.add(option)
        if option is float:
            classes.add(int)
        if option is tuple:
            classes.add(list)
    if isinstance(value, bool) and bool not in classes:
        ok = False
    else:
        ok = isinstance(value, tuple(classes))
    if not ok:
        names = " or ".join(sorted("null" if c is type(None) else c.__name__ for c in classes))
        raise TypeError(f"{name} must be {names}, got {value!r}")


def _check_builds(section: str, build) -> None:
    """Run a section's own builder now, so its validation (temperatures, mask ratios, patch sizes, crop sizes) fails
    before training starts, the message prefixed with the recipe section."""
    try:
        build()
    except (ValueError, TypeError) as error:
        raise type(error)(f"{section}: {error}") from error


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _pretraining_types() -> list[str]:
    """The model types `AutoModelForPreTraining` can build from our registrations."""
    import hf_ssl  # noqa: F401
    from transformers import AutoModelForPreTraining

    return sorted(config.model_type for config in AutoModelForPreTraining._model_mapping._extra_content)


def parse_override(override: str) -> tuple[list[str], Any]:
    """`"optim.lr=1e-3"` -> (["optim", "lr"], 0.001): the value is parsed as YAML (numbers, bools, null, lists)."""
    key, sep, raw = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {override!r} must look like section.key=value (e.g. optim.lr=1e-3)")
    return key.split("."), _yaml(raw) if raw else None


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Set each `key.sub=value` in the nested dict `values` (in place) and return it."""
    for override in overrides:
        path, value = parse_override(override)
        if len(path) < 2:
            raise ValueError(f"override {override!r} must name a field inside a section, e.g. train.max_steps=10")
        node = values
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"override {override!r}: {part!r} is not a section but {child!r}")
            node = child
        node[path[-1]] = value
    return values


class _RecipeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that also reads `1e-3` as a float (YAML 1.1 wants `1.0e-3`)."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_RecipeLoader)


def _read_yaml(path: Path) -> dict:
    values = _yaml(Path(path).read_text())
    if not isinstance(values, dict):
        raise ValueError(f"recipe {path} must be a YAML mapping of sections")
    return values


def packaged_recipes() -> list[str]:
    """Names of the recipes shipped in `hf_ssl/recipes`."""
    folder = resources.files("hf_ssl") / "recipes"
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A YAML path as given, or a packaged recipe by bare name (`dino_tiny_fmnist`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    packaged = resources.files("hf_ssl") / "recipes" / f"{name}.yaml"
    if str(name_or_path) == path.name and packaged.is_file():
        return Path(str(packaged))
    raise FileNotFoundError(f"no recipe file {str(name_or_path)!r}; packaged recipes: {', '.join(packaged_recipes())}")


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe, apply `key.sub=value` overrides, and validate it."""
    values = _read_yaml(resolve_recipe_path(name_or_path))
    recipe = Recipe.from_dict(apply_overrides(values, overrides or []))
    recipe.validate()
    return recipe
