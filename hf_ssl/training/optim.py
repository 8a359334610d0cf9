"""Parameter groups (weight-decay exclusion, layer-wise LR decay) and the optimizers: AdamW, SGD and LARS.

Every group carries `lr_scale` and `apply_wd`; each step the engine sets `group["lr"] = lr(step) * lr_scale` and
`group["weight_decay"] = wd(step) if apply_wd else 0`, so one schedule drives all groups.
"""

import re

import torch
from torch import nn

OPTIMIZERS = ("adamw", "sgd", "lars")
_LAYER_INDEX = re.compile(r"^layers\.(\d+)\.")


def excluded_from_weight_decay(name: str, param: torch.Tensor) -> bool:
    """DINO's rule: biases and every 1-D parameter (norm weights, LayerScale gammas) get no weight decay."""
    return name.endswith(".bias") or param.ndim == 1


def _vit_encoders(model: nn.Module) -> dict[str, int]:
    """Prefix (with trailing dot) -> depth of every ViT-like encoder inside `model`: a module with `embeddings` and a
    `layers` ModuleList, like our `SSLViTModel`."""
    encoders = {}
    for name, module in model.named_modules():
        if hasattr(module, "embeddings") and isinstance(getattr(module, "layers", None), nn.ModuleList):
            encoders[f"{name}." if name else ""] = len(module.layers)
    return encoders


def layer_id(name: str, encoders: dict[str, int]) -> tuple[int, int] | None:
    """(layer id, depth L) of a parameter inside a ViT encoder: embeddings -> 0, `layers.i` -> i + 1, anything else
    of the encoder (final norm) -> L + 1. `None` for parameters outside every encoder (heads)."""
    for prefix, depth in encoders.items():
        if not name.startswith(prefix):
            continue
        local = name[len(prefix) :]
        if local.startswith("embeddings."):
            return 0, depth
        match = _LAYER_INDEX.match(local)
        if match:
            return int(match.group(1)) + 1, depth
        return depth + 1, depth
    return None


def param_groups(
    model: nn.Module, layer_decay: float | None = None, patch_embed_lr_mult: float = 1.0
) -> list[dict]:
    """The trainable parameters of `model` in groups of equal (`apply_wd`, `lr_scale`).

    `lr_scale` is `layer_decay ** (L + 1 - layer_id)` inside ViT encoders (1 for heads and when `layer_decay` is
    None), times `patch_embed_lr_mult` for the patch embedding (DINOv2 uses 0.2).
    """
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ValueError(f"optim.layer_decay must be in (0, 1], got {layer_decay}")
    if patch_embed_lr_mult <= 0:
        raise ValueError(f"optim.patch_embed_lr_mult must be > 0, got {patch_embed_lr_mult}")
    encoders = _vit_encoders(model)
    groups: dict[tuple[bool, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr_scale = 1.0
        ids = layer_id(name, encoders)
        if layer_decay is not None and ids is not None:
            lr_scale = layer_decay ** (ids[1] + 1 - ids[0])
        if ids is not None and ".patch_embeddings." in f".{name}":
            lr_scale *= patch_embed_lr_mult
        apply_wd = not excluded_from_weight_decay(name, param)
        group = groups.setdefault((apply_wd, lr_scale), {"params": [], "lr_scale": lr_scale, "apply_wd": apply_wd})
        group["params"].append(param)
    if not groups:
        raise ValueError("the model has no parameter with requires_grad=True to optimize")
    return list(groups.values())


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You et al., 2017), as SimCLR, BYOL and Barlow Twins use it.

    For each parameter `w` with gradient `g` of a group with `lars_adaptation=True`:
    `g <- g + wd * w`, then `g <- g * trust_coefficient * ||w|| / ||g||` (ratio 1 when either norm is 0);
    groups with `lars_adaptation=False` (biases, norms) use the plain gradient plus their (normally zero) decay.
    Then `v <- momentum * v + g` and `w <- w - lr * v`, the `torch.optim.SGD` convention.
    """

    def __init__(
        self,
        params,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        lars_adaptation: bool = True,
    ):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if trust_coefficient <= 0:
            raise ValueError(f"trust_coefficient must be > 0, got {trust_coefficient}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            lars_adaptation=lars_adaptation,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad
                if group["weight_decay"] != 0:
                    update = update.add(param, alpha=group["weight_decay"])
                if group["lars_adaptation"]:
                    param_norm = torch.linalg.vector_norm(param)
                    update_norm = torch.linalg.vector_norm(update)
                    trust = torch.where(
                        (param_norm > 0) & (update_norm > 0),
                        group["trust_coefficient"] * param_norm / update_norm,
                        torch.ones_like(param_norm),
                    )
                    update = update.mul(trust)
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = update.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                param.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.9,
    trust_coefficient: float = 0.001,
    layer_decay: float | None = None,
    patch_embed_lr_mult: float = 1.0,
) -> torch.optim.Optimizer:
    """The optimizer `name` over `param_groups(model, ...)`, each group at `lr * lr_scale` and `weight_decay` if
    `apply_wd` (the engine re-sets both every step from the schedules)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optim.optimizer must be one of {OPTIMIZERS}, got {name!r}")
    groups = param_groups(model, layer_decay, patch_embed_lr_mult)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
        group["weight_decay"] = weight_decay if group["apply_wd"] else 0.0
        if name == "lars":
            group["lars_adaptation"] = group["apply_wd"]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return LARS(groups, lr=lr, momentum=momentum, trust_coefficient=trust_coefficient)
