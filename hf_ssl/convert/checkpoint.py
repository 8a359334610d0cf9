"""Reading research checkpoints without running their code, and finding an encoder inside them.

`torch.load` runs with `weights_only=True`: only tensors, containers and, allow-listed, `argparse.Namespace` (the
`args` that DINO, iBOT and MAE store in their full checkpoints) are unpickled. A pickle that needs anything else
(a class of the original code, or worse) is refused with a clear error, never loaded with `weights_only=False`.
"""

import argparse
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file


def load_checkpoint(path: str | Path) -> dict:
    """The top-level dict of a `.pth` / `.pth.tar` / `.safetensors` checkpoint, on the CPU; `ValueError` for a file
    that is truncated, not a checkpoint, or needs code execution to unpickle."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(path, device="cpu")
        except SafetensorError as error:
            raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from error
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise ValueError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {error}") from error
        found = re.search(r"(GLOBAL [\w.]+)", str(error))
        detail = f" ({found.group(1)})" if found else ""
        raise ValueError(
            f"{path} cannot be read safely: its pickle needs code execution{detail}. hf-ssl only unpickles tensors, "
            "containers and argparse.Namespace (weights_only=True) and will not run code from a checkpoint; if you "
            "trust the file, re-save its state dict with plain tensors first."
        ) from error
    except (RuntimeError, EOFError) as error:
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        ) from error
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, expected a dict (a state dict or a checkpoint)")
    return checkpoint


def is_state_dict(value) -> bool:
    """A non-empty mapping of string keys to tensors."""
    return isinstance(value, dict) and bool(value) and all(
        isinstance(key, str) and isinstance(tensor, torch.Tensor) for key, tensor in value.items()
    )


@dataclass(frozen=True)
class Source:
    """Where an encoder sits in a checkpoint: the keys leading to a state dict (`()`: the file is the state dict),
    then a key prefix inside it (`"module.backbone."`)."""

    container: tuple[str, ...]
    prefix: str

    def describe(self) -> str:
        where = "".join(f"[{key!r}]" for key in self.container) or "the top level"
        return f"{where} with prefix {self.prefix!r}"

    def state_dict(self, checkpoint: dict) -> dict[str, torch.Tensor] | None:
        """The state dict this source points to, or None where the checkpoint has none there."""
        value = checkpoint
        for key in self.container:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value if is_state_dict(value) else None

    def matches(self, checkpoint: dict, anchor: str) -> bool:
        """Whether the checkpoint has `anchor` (e.g. `patch_embed.proj.weight`) under this source."""
        state_dict = self.state_dict(checkpoint)
        return state_dict is not None and self.prefix + anchor in state_dict


def anchor_locations(checkpoint: dict, anchor: str, depth: int = 2) -> list[Source]:
    """Every (container, prefix) under which `anchor` appears, for error messages that say what the file holds."""
    found = []

    def visit(value, container):
        if is_state_dict(value):
            found.extend(Source(container, key[: -len(anchor)]) for key in value if key.endswith(anchor))
        elif isinstance(value, dict) and len(container) < depth:
            for key, child in value.items():
                if isinstance(key, str):
                    visit(child, (*container, key))

    visit(checkpoint, ())
    return found
