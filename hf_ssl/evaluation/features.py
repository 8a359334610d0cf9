"""Frozen features of a labelled dataset split, shared by every evaluation (kNN, linear probe, few-shot, metrics).

`labelled_features(model, processor, "fashion_mnist", "train")` returns `(features, labels)`: the model's
`pooler_output` for each image, in dataset order. With `cache_dir`, the pair is written to one safetensors file whose
name is a hash of (model path, weights' modification time, dataset, split, image limit, random init), so a second
evaluation of the same checkpoint reads its features instead of recomputing them.
"""

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm


def load_model_and_processor(model, random_init: bool = False, **from_pretrained_kwargs):
    """`(model, processor)` for a model folder / Hub id (anything `AutoModel` loads) or an already loaded model.

    The processor is the one saved with the model, else `processor_for(config)`. `random_init=True` gives the
    same architecture with freshly initialised weights (seed 0): the baseline a trained model must beat.
    """
    from transformers import AutoModel

    from .extract import load_image_processor
    from ..processing.image_processing import processor_for

    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        model = AutoModel.from_pretrained(path, **from_pretrained_kwargs)
        processor = load_image_processor(path, model.config)
    elif isinstance(model, torch.nn.Module) and hasattr(model, "config"):
        processor = processor_for(model.config)
    else:
        raise TypeError(f"model must be a path, a Hub id or a transformers model, got {type(model).__name__}")
    if random_init:
        torch.manual_seed(0)
        model = type(model)(model.config)
    return model.eval(), processor


def processor_sizes(processor) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """`((resize_h, resize_w), crop or None)` of an image processor; a `shortest_edge` resize of a square image
    is (edge, edge)."""

    def pair(size: dict) -> tuple[int, int]:
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        if "shortest_edge" in size:
            return int(size["shortest_edge"]), int(size["shortest_edge"])
        raise ValueError(f"unsupported image processor size {size}")

    crop = pair(processor.crop_size) if getattr(processor, "do_center_crop", False) else None
    resize = pair(processor.size) if getattr(processor, "do_resize", True) else crop
    return resize, crop


def _per_channel(values: list[float], num_channels: int) -> torch.Tensor:
    """(1, C, 1, 1) statistics; averaged when the processor's channel count differs from the model's."""
    values = torch.tensor(values, dtype=torch.float32)
    if values.numel() != num_channels:
        values = values.mean().repeat(num_channels)
    return values.view(1, -1, 1, 1)


def array_pixel_values(images: torch.Tensor, processor, num_channels: int) -> torch.Tensor:
    """Model input for uint8 images (N, H, W) or (N, C, H, W) of one size: bicubic resize, center crop and
    normalisation as `processor` does it, done on the whole batch at once (square images assumed for
    `shortest_edge`)."""
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W), got shape {tuple(images.shape)}")
    resize, crop = processor_sizes(processor)
    pixels = images.float() / 255.0
    if resize is not None and tuple(pixels.shape[-2:]) != resize:
        pixels = F.interpolate(pixels, size=resize, mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    if crop is not None and tuple(pixels.shape[-2:]) != crop:
        top, left = (pixels.shape[-2] - crop[0]) // 2, (pixels.shape[-1] - crop[1]) // 2
        pixels = pixels[..., top : top + crop[0], left : left + crop[1]]
    if pixels.shape[1] != num_channels:
        pixels = pixels.expand(-1, num_channels, -1, -1) if pixels.shape[1] == 1 else pixels.mean(1, keepdim=True)
    mean, std = (_per_channel(values, num_channels) for values in (processor.image_mean, processor.image_std))
    return (pixels - mean) / std


def num_channels_of(model) -> int:
    """Input channels of a model (a method config's backbone, or the model's own config)."""
    backbone_config = getattr(model.config, "backbone_config", None) or model.config
    return getattr(backbone_config, "num_channels", 3)


@torch.no_grad()
def extract_array_features(
    model: torch.nn.Module, images: torch.Tensor, processor, batch_size: int = 256, desc: str = "features"
) -> torch.Tensor:
    """`pooler_output` (N, D) float32 of `model` for uint8 images (N, H, W) or (N, C, H, W), preprocessed like
    `processor` would (see `array_pixel_values`)."""
    parameter = next(model.parameters())
    num_channels = num_channels_of(model)
    model.eval()
    features = []
    for batch in tqdm(images.split(batch_size), desc=desc, leave=False):
        pixels = array_pixel_values(batch, processor, num_channels).to(parameter.device, parameter.dtype)
        features.append(model(pixel_values=pixels).pooler_output.float().cpu())
    return torch.cat(features)


def labelled_split(dataset: str, split: str, limit: int | None = None, labels: bool = True):
    """`(images, labels)` of a dataset split: a uint8 tensor (N, H, W) for Fashion-MNIST and fixed-shape array
    datasets, else a `datasets.Dataset` with an `image` column; `labels` is an int64 tensor (None when the dataset
    has none and `labels=False`; a `ValueError` when it has none and `labels=True`)."""
    import datasets
    import numpy as np

    from ..data.datasets import fashion_mnist_arrays, load_dataset_for_pretraining

    if limit is not None and limit < 1:
        raise ValueError(f"the image limit must be >= 1, got {limit}")
    if dataset == "fashion_mnist":
        images, targets = fashion_mnist_arrays(split)
        return torch.from_numpy(images[:limit].copy()), torch.from_numpy(targets[:limit].copy())
    data = load_dataset_for_pretraining(dataset, split=split)
    if labels and "label" not in data.column_names:
        raise ValueError(f"this evaluation needs integer labels; dataset {dataset!r} has columns {data.column_names}")
    if limit:
        data = data.select(range(min(limit, len(data))))
    targets = torch.tensor(data["label"], dtype=torch.int64) if "label" in data.column_names else None
    if isinstance(data.features["image"], (datasets.Array2D, datasets.Array3D)):
        return torch.from_numpy(np.asarray(data.with_format("numpy")["image"])), targets
    return data, targets


def split_features(model, processor, images, batch_size: int = 256, desc: str = "features") -> torch.Tensor:
    """Features of what `labelled_split` returned: a uint8 tensor or a `datasets.Dataset` with an `image` column."""
    if isinstance(images, torch.Tensor):
        return extract_array_features(model, images, processor, batch_size, desc)
    from .extract import extract_features

    return extract_features(model, processor, list(images["image"]), batch_size)[0]


def cache_key(model_path, dataset: str, split: str, limit: int | None, random_init: bool) -> dict:
    """What identifies a features file: the model (path and, for a folder, its weights' modification time), the
    dataset, the split, the image limit and whether the weights were randomly re-initialised."""
    key = {"model": os.fspath(model_path), "dataset": dataset, "split": split, "limit": limit, "random_init": random_init}
    if os.path.isdir(model_path):
        weights = sorted(Path(model_path).glob("*.safetensors")) or sorted(Path(model_path).glob("*.bin"))
        key["weights_mtime"] = [path.stat().st_mtime_ns for path in weights]
    return key


def cache_path(cache_dir: str | os.PathLike, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / f"features-{digest}.safetensors"


def labelled_features(
    model,
    processor,
    dataset: str,
    split: str,
    limit: int | None = None,
    batch_size: int = 256,
    cache_dir: str | os.PathLike | None = None,
    key: dict | None = None,
    labels: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(features (N, D) float32, labels (N,) int64)` of a dataset split, read from / written to `cache_dir`
    when both it and the cache `key` (see `cache_key`) are given. `labels=False` accepts unlabelled datasets
    (labels are then None)."""
    path = cache_path(cache_dir, key) if cache_dir is not None and key is not None else None
    if path is not None and path.is_file():
        tensors = load_file(str(path))
        if labels and "labels" not in tensors:
            raise ValueError(f"this evaluation needs integer labels; dataset {dataset!r} has none")
        return tensors["features"], tensors.get("labels")
    images, targets = labelled_split(dataset, split, limit, labels)
    features = split_features(model, processor, images, batch_size, desc=f"{split} features")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tensors = {"features": features.contiguous()}
            if targets is not None:
                tensors["labels"] = targets.contiguous()
            save_file(tensors, str(temporary), metadata={"key": json.dumps(key, sort_keys=True)})
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    return features, targets


def model_split_features(
    model,
    dataset: str,
    splits: dict[str, int | None],
    batch_size: int = 256,
    random_init: bool = False,
    cache_dir: str | os.PathLike | None = None,
    labels: bool = True,
) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """`{split: (features, labels)}` for a model (path, Hub id or loaded model) and `{split: image limit}`; the
    model is loaded only when some split is not cached. Only a model given by path can be cached."""
    path = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    keys = {
        split: cache_key(path, dataset, split, limit, random_init) if path is not None and cache_dir else None
        for split, limit in splits.items()
    }
    loaded, processor = None, None
    results = {}
    for split, limit in splits.items():
        cached = keys[split] is not None and cache_path(cache_dir, keys[split]).is_file()
        if loaded is None and not cached:
            loaded, processor = load_model_and_processor(model, random_init)
        results[split] = labelled_features(
            loaded, processor, dataset, split, limit, batch_size, cache_dir, keys[split], labels
        )
    return results
