"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is a folder `checkpoint-<step>/` holding
- `model.safetensors`: the whole pretraining model's state (students, EMA teachers, method buffers such as DINO's
  centre), fp32 as trained;
- `optimizer.pt`: the optimizer's state dict (tensors, numbers and strings only: read back with `weights_only=True`);
- `scaler.json`: the fp16 loss scaler's state, when there is one;
- `rng-<process>.safetensors` + `rng-<process>.json`: each process's torch (CPU and CUDA), numpy and Python RNG states;
- `engine_state.json`: step, data position (epoch, batch within the epoch) and counters.

It is first written to `checkpoint-<step>.tmp/` and then renamed with `os.replace`, so a crash while saving leaves
either the previous checkpoints or a `.tmp` folder that `latest_checkpoint` ignores and `remove_incomplete` deletes.
Nothing is pickled. Model and optimizer are saved by the main process (DDP keeps them identical on every process).
"""

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
ENGINE_STATE = "engine_state.json"


def checkpoint_dirs(output_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoints in `output_dir`, oldest first (by step)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and (path / ENGINE_STATE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in `output_dir`, or None. Unfinished `.tmp` folders are ignored."""
    found = checkpoint_dirs(output_dir)
    return found[-1] if found else None


def remove_incomplete(output_dir: str | os.PathLike) -> list[Path]:
    """Delete `checkpoint-*.tmp` folders left by a crash during saving; returns what was removed."""
    output_dir = Path(output_dir)
    removed = sorted(output_dir.glob("checkpoint-*.tmp")) if output_dir.is_dir() else []
    for path in removed:
        shutil.rmtree(path)
    return removed


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    version, mt_state, gauss_next = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_keys.astype(np.int64))}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{index}"] = state
    scalars = {
        "python": [version, list(mt_state), gauss_next],
        "numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_cached)],
    }
    return tensors, scalars


def _set_rng_state(tensors: dict[str, torch.Tensor], scalars: dict) -> None:
    version, mt_state, gauss_next = scalars["python"]
    random.setstate((version, tuple(mt_state), gauss_next))
    np_name, np_pos, np_has_gauss, np_cached = scalars["numpy"]
    np.random.set_state((np_name, tensors["numpy_keys"].numpy().astype(np.uint32), np_pos, np_has_gauss, np_cached))
    torch.set_rng_state(tensors["torch"])
    cuda_states = [tensors[f"cuda_{i}"] for i in range(len(tensors)) if f"cuda_{i}" in tensors]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])


def _write_json(path: Path, values: dict) -> None:
    path.write_text(json.dumps(values, indent=2))


def _fsync_files(folder: Path) -> None:
    """Flush every file of `folder` to disk, so the rename that follows publishes complete files."""
    for path in folder.iterdir():
        with open(path, "rb") as file:
            os.fsync(file.fileno())


def save_checkpoint(
    output_dir: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    engine_state: dict,
    accelerator,
    keep_last: int | None = None,
) -> Path:
    """Write `checkpoint-<step>/` atomically (see the module docstring) and keep only the newest `keep_last`.

    `model` is the unwrapped model; every process must call this (each saves its own RNG states).
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f"checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    rank = accelerator.process_index
    rng_tensors, rng_scalars = _rng_state()
    save_file(rng_tensors, str(tmp / f"rng-{rank}.safetensors"))
    _write_json(tmp / f"rng-{rank}.json", rng_scalars)
    if accelerator.is_main_process:
        save_model(model, str(tmp / "model.safetensors"), force_contiguous=True)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if accelerator.scaler is not None:
            _write_json(tmp / "scaler.json", accelerator.scaler.state_dict())
        _write_json(tmp / ENGINE_STATE, {**engine_state, "step": step, "num_processes": accelerator.num_processes})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _fsync_files(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep_last is not None:
            for old in checkpoint_dirs(output_dir)[:-keep_last]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer, accelerator
) -> dict:
    """Restore model, optimizer, loss scaler and this process's RNG states from `path`; returns the engine state."""
    path = Path(path)
    if not (path / ENGINE_STATE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {ENGINE_STATE})")
    engine_state = json.loads((path / ENGINE_STATE).read_text())
    if engine_state["num_processes"] != accelerator.num_processes:
        raise ValueError(
            f"checkpoint {path} was written by {engine_state['num_processes']} processes, this run has "
            f"{accelerator.num_processes}: the data order could not be continued exactly"
        )
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match the model: missing {missing}, unexpected {unexpected}")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    if accelerator.scaler is not None and (path / "scaler.json").is_file():
        accelerator.scaler.load_state_dict(json.loads((path / "scaler.json").read_text()))
    rank = accelerator.process_index
    rng_tensors = load_file(str(path / f"rng-{rank}.safetensors"))
    _set_rng_state(rng_tensors, json.loads((path / f"rng-{rank}.json").read_text()))
    return engine_state
