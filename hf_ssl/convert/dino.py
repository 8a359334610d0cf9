"""A full DINO training checkpoint (`checkpoint.pth`) -> `DinoForPreTraining`, to continue pretraining.

The file holds the student (`module.backbone.*`, `module.head.*`), the teacher (`backbone.*`, `head.*`; under
`module.` too for ResNets, whose teacher is DDP-wrapped), the loss's `center` under `dino_loss`, and the run's
settings in `args`. Our heads keep the original layer indices (`mlp.N` -> `mlp.layers.N`); the weight-normalised
last layer's `weight_g`/`weight_v` become the parametrization's `original0`/`original1`.
"""

import re
from collections.abc import Callable

import torch
from transformers import PreTrainedModel
from transformers.initialization import no_init_weights

from .checkpoint import is_state_dict


def _module_prefix(state_dict: dict) -> str:
    return "module." if all(key.startswith("module.") for key in state_dict) else ""


def dino_head_state(head: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An original `DINOHead` state dict (keys after `head.`) in our `DinoHead` names."""
    renamed = {}
    for key, value in head.items():
        ours = re.sub(r"^mlp\.(weight|bias)$", r"mlp.layers.0.\1", key)  # nlayers=1: the MLP is a single Linear
        ours = re.sub(r"^mlp\.(\d+)\.", r"mlp.layers.\1.", ours)
        ours = {"last_layer.weight_g": "last_layer.parametrizations.weight.original0",
                "last_layer.weight_v": "last_layer.parametrizations.weight.original1"}.get(ours, ours)
        if not ours.startswith(("mlp.layers.", "last_layer.parametrizations.")):
            raise ValueError(f"DINO head tensor {key!r} has no place in hf_ssl's DinoHead")
        renamed[ours] = value
    return renamed


def dino_head_settings(head: dict[str, torch.Tensor]) -> dict:
    """DinoConfig head fields read from the shapes of our-named head tensors."""
    directions = head.get("last_layer.parametrizations.weight.original1")
    if directions is None:
        raise ValueError("the DINO head has no weight-normalised last layer (last_layer.weight_v)")
    linear = sorted(
        (int(key.split(".")[2]), value) for key, value in head.items()
        if key.startswith("mlp.layers.") and key.endswith(".weight") and value.ndim == 2
    )
    return dict(
        head_out_dim=directions.shape[0],
        head_bottleneck_dim=directions.shape[1],
        head_num_layers=len(linear),
        head_hidden_dim=linear[0][1].shape[0] if len(linear) > 1 else 2048,
        head_use_bn=any(key.endswith("running_mean") for key in head),
    )


def dino_pretraining(
    checkpoint: dict, args: dict, build_encoder: Callable[..., PreTrainedModel]
) -> tuple[PreTrainedModel, dict] | None:
    """`DinoForPreTraining` from a full checkpoint (None for a file without `student` and `teacher`), with the
    student's drop-path rate, the loss settings of `args`, the loss's centre and the teacher temperature of the
    epoch the file was saved at. `build_encoder(weights, **settings)` converts one backbone's original weights."""
    from ..modeling.dino import DinoConfig, DinoForPreTraining

    if not (is_state_dict(checkpoint.get("student")) and is_state_dict(checkpoint.get("teacher"))):
        return None
    parts = {}
    for name in ("student", "teacher"):
        state_dict = checkpoint[name]
        prefix = _module_prefix(state_dict)
        backbone = {key[len(prefix) + len("backbone."):]: value for key, value in state_dict.items()
                    if key.startswith(prefix + "backbone.")}
        head = {key[len(prefix) + len("head."):]: value for key, value in state_dict.items()
                if key.startswith(prefix + "head.")}
        others = sorted(set(state_dict) - {prefix + "backbone." + k for k in backbone} - {prefix + "head." + k for k in head})
        if others:
            raise ValueError(f"DINO {name} tensors outside backbone and head, refusing to drop them: {others[:8]}")
        parts[name] = (backbone, dino_head_state(head))

    settings = {"drop_path_rate": float(args.get("drop_path_rate", 0.0))}
    student = build_encoder(parts["student"][0], **settings)
    teacher = build_encoder(parts["teacher"][0], **settings)
    head_settings = dino_head_settings(parts["student"][1])
    loss_fields = dict(
        teacher_temp=args.get("teacher_temp"),
        warmup_teacher_temp=args.get("warmup_teacher_temp"),
        warmup_teacher_temp_epochs=args.get("warmup_teacher_temp_epochs"),
        momentum_teacher=args.get("momentum_teacher"),
        norm_last_layer=args.get("norm_last_layer"),
        freeze_last_layer_epochs=args.get("freeze_last_layer"),
    )
    config = DinoConfig(
        backbone_config=student.config, **head_settings,
        **{key: value for key, value in loss_fields.items() if value is not None},
    )
    with no_init_weights():
        model = DinoForPreTraining(config)
    center = checkpoint.get("dino_loss", {}).get("center") if isinstance(checkpoint.get("dino_loss"), dict) else None
    epoch = int(checkpoint.get("epoch", 0))
    state = {
        **{f"student.backbone.{key}": value for key, value in student.state_dict().items()},
        **{f"dino.backbone.{key}": value for key, value in teacher.state_dict().items()},
        **{f"student_head.{key}": value for key, value in parts["student"][1].items()},
        **{f"teacher_head.{key}": value for key, value in parts["teacher"][1].items()},
        "center": center if center is not None else torch.zeros(1, config.head_out_dim),
        "teacher_temperature": torch.tensor(model.teacher_temp_at_epoch(epoch)),
    }
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"the DINO checkpoint's heads do not fit DinoForPreTraining: {error}") from error
    model.freeze_untrained_parameters()
    report = {
        "pretraining": "DinoForPreTraining: student, teacher (AutoModel loads it), both heads, the loss centre",
        "epoch": epoch,
        "center": "from dino_loss" if center is not None else "not in the file: zeros",
    }
    return model.eval(), report
