"""`hf-ssl extract`: the `pooler_output` features of a folder of images, written to one safetensors file.

    hf-ssl extract --model ./dino-vits16 --images ./photos --out feats.safetensors [--skip-errors]

The file holds `features` (N, D) float32; its metadata holds `paths` (JSON list of the images' paths relative to
`--images`, in row order), `skipped` (JSON list of the unreadable images left out with `--skip-errors`) and `model`.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModel, PreTrainedConfig

from ..data.images import load_image
from ..processing.image_processing import processor_for

IMAGE_EXTENSIONS = frozenset(
    {".bmp", ".gif", ".jfif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".pnm", ".ppm", ".tif", ".tiff", ".webp"}
)


def find_images(root: str | os.PathLike) -> list[Path]:
    """Image files under `root`, recursively, sorted by relative path (the same order on every machine)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    files = (path for path in root.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file())
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def load_image_processor(model_name_or_path: str | os.PathLike, config: PreTrainedConfig):
    """The image processor saved with the model, or one built from its config when there is none."""
    try:
        return AutoImageProcessor.from_pretrained(model_name_or_path)
    except OSError:
        return processor_for(config)


def _load_images(items: list, skip_errors: bool) -> tuple[list, list, list[tuple[Any, str]]]:
    """Decoded images and the items they came from; unreadable items raise, or are returned with their error."""
    images, kept, skipped = [], [], []
    for item in items:
        try:
            images.append(load_image(item))
        except ValueError as error:
            if not skip_errors:
                raise
            skipped.append((item, str(error)))
        else:
            kept.append(item)
    return images, kept, skipped


@torch.inference_mode()
def extract_features(
    model: torch.nn.Module,
    processor,
    items: list,
    batch_size: int = 32,
    skip_errors: bool = False,
    progress: bool = True,
) -> tuple[torch.Tensor, list, list[tuple[Any, str]]]:
    """
    `pooler_output` (N, D) float32 on CPU of image paths or PIL images, in batches; `model` stays on its device.

    Returns `(features, kept, skipped)`: `kept` are the items of the feature rows, in order; `skipped` holds
    `(item, error)` for images that could not be decoded (only with `skip_errors`; otherwise the first one raises
    a `ValueError` naming the file).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(items) == 0:
        raise ValueError("no images to extract features from")
    parameter = next(model.parameters())
    model.eval()
    features, kept, skipped = [], [], []
    with tqdm(total=len(items), unit="img", desc="extract", disable=not progress) as bar:
        for start in range(0, len(items), batch_size):
            images, batch_kept, batch_skipped = _load_images(items[start : start + batch_size], skip_errors)
            kept += batch_kept
            skipped += batch_skipped
            if images:
                pixel_values = processor(images, return_tensors="pt")["pixel_values"]
                pixel_values = pixel_values.to(device=parameter.device, dtype=parameter.dtype)
                pooled = model(pixel_values=pixel_values).pooler_output
                if pooled is None:
                    raise TypeError(f"{type(model).__name__} returns no pooler_output to use as features")
                features.append(pooled.float().cpu())
            bar.update(len(images) + len(batch_skipped))
    if not features:
        raise ValueError(f"none of the {len(items)} images could be read")
    return torch.cat(features), kept, skipped


def save_features(path: str | os.PathLike, features: torch.Tensor, metadata: dict[str, str]) -> None:
    """Write `features` to a safetensors file atomically: a temporary file beside it, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({"features": features.contiguous()}, str(temporary), metadata=metadata)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="model folder or Hub id (anything AutoModel loads)")
    parser.add_argument("--images", required=True, help="folder of images, searched recursively")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1, mps")
    parser.add_argument(
        "--skip-errors", action="store_true", help="skip unreadable images (and list them) instead of stopping"
    )


def _fail(message: str) -> int:
    print(f"hf-ssl extract: error: {message}", file=sys.stderr)
    return 1


def run(args) -> int:
    root = Path(args.images)
    try:
        files = find_images(root)
    except ValueError as error:
        return _fail(str(error))
    if not files:
        return _fail(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    model = AutoModel.from_pretrained(args.model).to(args.device)
    processor = load_image_processor(args.model, model.config)
    try:
        features, kept, skipped = extract_features(
            model, processor, files, batch_size=args.batch_size, skip_errors=args.skip_errors
        )
    except ValueError as error:
        return _fail(f"{error}" if args.skip_errors else f"{error} (--skip-errors skips unreadable images)")
    relative = [path.relative_to(root).as_posix() for path in kept]
    skipped_relative = [path.relative_to(root).as_posix() for path, _ in skipped]
    metadata = {"paths": json.dumps(relative), "skipped": json.dumps(skipped_relative), "model": str(args.model)}
    save_features(args.out, features, metadata)
    for _, error in skipped:
        print(f"skipped: {error}", file=sys.stderr)
    print(f"wrote {features.shape[0]} features of size {features.shape[1]} to {args.out} ({len(skipped)} skipped)")
    return 0
