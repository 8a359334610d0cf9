"""`hf-ssl visualize ...`: the figures SSL papers show, as PNG files of a requested pixel size.

    hf-ssl visualize attention --model M --image cat.jpg --out attention.png      CLS self-attention per head (DINO)
    hf-ssl visualize pca       --model M --image a.jpg b.jpg --out pca.png        patch features' PCA as RGB (DINOv2)
    hf-ssl visualize retrieval --model M --dataset D --out retrieval.png          queries and their nearest neighbours
    hf-ssl visualize curves    --logs runs/dino --out curves.png                  training curves (tensorboard / jsonl)
    hf-ssl visualize tsne      --model M --dataset D --out tsne.png               t-SNE of features, coloured by label
    hf-ssl visualize mae       --model M --image x.jpg --out recon.png            MAE original / masked / reconstruction

Every command takes `--width`/`--height` (pixels). Plotting uses matplotlib's object API (no pyplot state), so it
works headless and in threads.
"""

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

DPI = 100


# ----------------------------------------------------------------------------------------------------------- figures
def _figure(size: tuple[int, int]):
    from matplotlib.figure import Figure

    width, height = size
    if width < 16 or height < 16:
        raise ValueError(f"figure size must be at least 16x16 pixels, got {width}x{height}")
    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI)


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path


def _grid(count: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid for `count` panels."""
    columns = math.ceil(math.sqrt(count))
    return math.ceil(count / columns), columns


def _show(axis, image: np.ndarray, title: str | None = None, **kwargs) -> None:
    kwargs.setdefault("cmap", "gray" if image.ndim == 2 else None)
    axis.imshow(image, **kwargs)
    axis.set_xticks([])
    axis.set_yticks([])
    if title:
        axis.set_title(title, fontsize=8)


# ---------------------------------------------------------------------------------------------------- model inputs
def _patch_size(model) -> int:
    config = getattr(model.config, "backbone_config", None) or model.config
    patch_size = getattr(config, "patch_size", None)
    if patch_size is None:
        raise ValueError(f"{type(model).__name__} has no patch_size: patch figures need a ViT")
    return patch_size if isinstance(patch_size, int) else patch_size[0]


def _pixel_values(processor, images) -> torch.Tensor:
    from ..data.images import load_image

    return processor([load_image(image) for image in images], return_tensors="pt")["pixel_values"]


def displayable(pixel_values: torch.Tensor, processor) -> np.ndarray:
    """(H, W, 3) or (H, W) floats in [0, 1] of one processed image (`pixel_values` (C, H, W)), de-normalised."""
    channels = pixel_values.shape[0]
    mean, std = (torch.tensor(v, dtype=torch.float32) for v in (processor.image_mean, processor.image_std))
    if mean.numel() != channels:
        mean, std = mean.mean().repeat(channels), std.mean().repeat(channels)
    image = (pixel_values.float() * std[:, None, None] + mean[:, None, None]).clamp(0, 1)
    return image[0].numpy() if channels == 1 else image.permute(1, 2, 0).numpy()


# ------------------------------------------------------------------------------------------------------- attention
@torch.no_grad()
def cls_attention_maps(model, pixel_values: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """(heads, H/p, W/p): the attention of the CLS token to every patch in `layer`, per head, for one image
    (`pixel_values` (1, C, H, W)). Register tokens and CLS itself are left out; each map sums to at most 1."""
    config = getattr(model.config, "backbone_config", None) or model.config
    if not getattr(config, "use_cls_token", True):
        raise ValueError(f"{type(model).__name__} has no CLS token to show the attention of")
    outputs = model(pixel_values=pixel_values, output_attentions=True)
    attentions = getattr(outputs, "attentions", None)
    if not attentions or attentions[layer] is None:
        raise ValueError(f"{type(model).__name__} returns no attention weights (not a ViT, or no eager attention)")
    patch = _patch_size(model)
    grid_h, grid_w = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
    weights = attentions[layer][0]  # (heads, tokens, tokens)
    return weights[:, 0, -grid_h * grid_w :].reshape(-1, grid_h, grid_w).float()


def plot_attention(image: np.ndarray, maps: torch.Tensor, path, size: tuple[int, int] = (1200, 400)) -> Path:
    """The image, then one heat map per head (upsampled to the image, nearest) and their mean."""
    panels = [("image", None)] + [(f"head {i}", m) for i, m in enumerate(maps)] + [("mean", maps.mean(0))]
    rows, columns = (1, len(panels)) if len(panels) <= 8 else _grid(len(panels))
    figure = _figure(size)
    extent = (0, image.shape[1], image.shape[0], 0)
    for index, (title, attention) in enumerate(panels):
        axis = figure.add_subplot(rows, columns, index + 1)
        if attention is None:
            _show(axis, image, title)
        else:
            _show(axis, attention.numpy(), title, cmap="inferno", extent=extent, interpolation="nearest")
    figure.tight_layout(pad=0.3)
    return _save(figure, path)


# ------------------------------------------------------------------------------------------------------------- PCA
@torch.no_grad()
def patch_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, H/p, W/p, D) patch features of `last_hidden_state` (prefix tokens removed; conv maps kept as they are)."""
    hidden = model(pixel_values=pixel_values).last_hidden_state.float()
    if hidden.ndim == 4:  # (B, C, h, w) of a ConvNet
        return hidden.permute(0, 2, 3, 1)
    patch = _patch_size(model)
    grid_h, grid_w = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
    return hidden[:, -grid_h * grid_w :].reshape(hidden.shape[0], grid_h, grid_w, -1)


def _principal_components(features: torch.Tensor, count: int) -> torch.Tensor:
    """(N, count) projections of (N, D) features on their first principal components."""
    centred = features - features.mean(dim=0)
    _, _, basis = torch.linalg.svd(centred, full_matrices=False)
    return centred @ basis[:count].T


def _min_max(values: torch.Tensor) -> torch.Tensor:
    low, high = values.min(dim=0).values, values.max(dim=0).values
    return (values - low) / (high - low).clamp_min(1e-12)


def pca_rgb(features: torch.Tensor, background_threshold: float | None = None) -> torch.Tensor:
    """(B, h, w, 3) colours in [0, 1]: the first three principal components of all images' patch features together,
    each scaled to [0, 1] (the DINOv2 figure).

    With `background_threshold`, a first PCA separates the foreground: patches whose first component (scaled to
    [0, 1], oriented so that the image borders are low, as background usually is) exceeds the threshold; the
    colours then come from a PCA of the foreground patches only, and the background is black.
    """
    batch, grid_h, grid_w, dim = features.shape
    flat = features.reshape(-1, dim)
    foreground = torch.ones(flat.shape[0], dtype=torch.bool)
    if background_threshold is not None:
        first = _min_max(_principal_components(flat, 1))[:, 0].reshape(batch, grid_h, grid_w)
        border = torch.ones(grid_h, grid_w, dtype=torch.bool)
        border[1:-1, 1:-1] = False
        inner = ~border
        if inner.any() and first[:, border].mean() > first[:, inner].mean():
            first = 1 - first
        foreground = (first > background_threshold).flatten()
        if foreground.sum() < 3:
            raise ValueError(f"background_threshold={background_threshold} leaves fewer than 3 foreground patches")
    colours = torch.zeros(flat.shape[0], 3)
    components = _principal_components(flat[foreground], min(3, dim))
    colours[foreground, : components.shape[1]] = _min_max(components)
    return colours.reshape(batch, grid_h, grid_w, 3)


def plot_pca(images: list[np.ndarray], colours: torch.Tensor, path, size: tuple[int, int] = (800, 400)) -> Path:
    """Each image (top row) above its patch-feature PCA colours (bottom row)."""
    figure = _figure(size)
    count = len(images)
    for index, image in enumerate(images):
        extent = (0, image.shape[1], image.shape[0], 0)
        _show(figure.add_subplot(2, count, index + 1), image)
        _show(figure.add_subplot(2, count, count + index + 1), colours[index].numpy(), extent=extent,
              interpolation="nearest")  # fmt: skip
    figure.tight_layout(pad=0.3)
    return _save(figure, path)


# ------------------------------------------------------------------------------------------------------- retrieval
def nearest_neighbours(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, indices), each (Q, k): the `k` gallery rows of highest cosine similarity to each query."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    queries = torch.nn.functional.normalize(queries.float(), dim=1)
    gallery = torch.nn.functional.normalize(gallery.float(), dim=1)
    return (queries @ gallery.T).topk(min(k, gallery.shape[0]), dim=1)


def plot_retrieval(
    queries: list[np.ndarray],
    neighbours: list[list[np.ndarray]],
    path,
    size: tuple[int, int] = (1000, 800),
    query_titles: list[str] | None = None,
    neighbour_titles: list[list[str]] | None = None,
    matches: list[list[bool]] | None = None,
) -> Path:
    """One row per query: the query, then its neighbours (framed green when `matches` says same label, else red)."""
    from matplotlib.patches import Rectangle

    rows, columns = len(queries), 1 + max(len(row) for row in neighbours)
    figure = _figure(size)
    for row, (query, found) in enumerate(zip(queries, neighbours)):
        _show(figure.add_subplot(rows, columns, row * columns + 1), query, query_titles[row] if query_titles else None)
        for column, image in enumerate(found):
            axis = figure.add_subplot(rows, columns, row * columns + column + 2)
            _show(axis, image, neighbour_titles[row][column] if neighbour_titles else None)
            if matches is not None:
                colour = "limegreen" if matches[row][column] else "red"
                axis.add_patch(Rectangle((0, 0), 1, 1, transform=axis.transAxes, fill=False, linewidth=3,
                                         edgecolor=colour))  # fmt: skip
    figure.tight_layout(pad=0.3)
    return _save(figure, path)


# ---------------------------------------------------------------------------------------------------------- curves
def _rows_to_series(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        if "step" not in row:
            raise ValueError(f"logged row without a 'step' key: {row}")
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(key, []).append((int(row["step"]), float(value)))
    return series


def _tensorboard_series(files: list[Path]) -> dict[str, list[tuple[int, float]]]:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as error:
        raise ValueError("reading tensorboard event files needs `pip install tensorboard`") from error
    series: dict[str, list[tuple[int, float]]] = {}
    for file in files:
        events = EventAccumulator(str(file), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags().get("scalars", []):
            series.setdefault(tag, []).extend((event.step, float(event.value)) for event in events.Scalars(tag))
    return series


def read_scalars(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """`{name: [(step, value), ...]}` sorted by step, from a log directory or file:

    - a directory: its tensorboard event files (recursively), else a `metrics.jsonl` or `trainer_state.json` in it;
    - `*.jsonl`: one JSON object per logged step, with a `step` key;
    - `*.json`: a list of such objects, or `Trainer`'s `trainer_state.json` (its `log_history`);
    - `*.csv`: a header row with a `step` column.
    """
    path = Path(path)
    if path.is_dir():
        events = sorted(path.rglob("events.out.tfevents.*"))
        if events:
            series = _tensorboard_series(events)
        else:
            candidates = sorted(path.rglob("metrics.jsonl")) + sorted(path.rglob("trainer_state.json"))
            if not candidates:
                raise ValueError(f"{path}: no tensorboard event files, metrics.jsonl or trainer_state.json")
            return read_scalars(candidates[0])
    elif not path.is_file():
        raise ValueError(f"{path}: no such log file or directory")
    elif path.suffix == ".jsonl":
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        series = _rows_to_series([json.loads(line) for line in lines])
    elif path.suffix == ".json":
        data = json.loads(path.read_text())
        series = _rows_to_series(data["log_history"] if isinstance(data, dict) and "log_history" in data else data)
    elif path.suffix == ".csv":
        with path.open(newline="") as file:
            rows = [
                {key: float(value) for key, value in row.items() if value not in (None, "")}
                for row in csv.DictReader(file)
            ]
        series = _rows_to_series(rows)
    else:
        raise ValueError(f"{path}: unsupported log file (use a directory, .jsonl, .json or .csv)")
    if not series:
        raise ValueError(f"{path}: no scalar values logged")
    return {name: sorted(points) for name, points in sorted(series.items())}


def plot_curves(
    series: dict[str, list[tuple[int, float]]], path, size: tuple[int, int] = (1000, 600), keys: list[str] | None = None
) -> Path:
    """One panel per logged scalar (those whose name contains one of `keys`, if given), value against step."""
    if keys:
        series = {name: points for name, points in series.items() if any(key in name for key in keys)}
        if not series:
            raise ValueError(f"no logged scalar matches {keys}")
    rows, columns = _grid(len(series))
    figure = _figure(size)
    for index, (name, points) in enumerate(series.items()):
        axis = figure.add_subplot(rows, columns, index + 1)
        steps, values = zip(*points)
        axis.plot(steps, values, linewidth=1, marker="." if len(points) < 30 else None)
        axis.set_title(name, fontsize=8)
        axis.tick_params(labelsize=6)
        axis.grid(alpha=0.3)
    figure.tight_layout(pad=0.4)
    return _save(figure, path)


# ------------------------------------------------------------------------------------------------------------ t-SNE
def tsne(features: torch.Tensor, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """(N, 2) t-SNE embedding (scikit-learn, PCA initialisation) of (N, D) features; perplexity capped at (N-1)/3."""
    try:
        from sklearn.manifold import TSNE
    except ImportError as error:
        raise ValueError("t-SNE needs `pip install scikit-learn`") from error
    if features.shape[0] < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {features.shape[0]}")
    perplexity = min(perplexity, (features.shape[0] - 1) / 3)
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features.float().numpy())


def plot_tsne(points: np.ndarray, labels, path, size: tuple[int, int] = (800, 800), names=None) -> Path:
    """A scatter plot of 2-d points coloured by label, with a legend of the class names."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    colours = _colours(len(classes))
    figure = _figure(size)
    axis = figure.add_subplot(1, 1, 1)
    for colour, label in zip(colours, classes):
        chosen = labels == label
        name = names[label] if names is not None and label < len(names) else str(label)
        axis.scatter(points[chosen, 0], points[chosen, 1], s=6, color=colour, label=name)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(fontsize=7, markerscale=2, loc="best")
    figure.tight_layout(pad=0.3)
    return _save(figure, path)


def _colours(count: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20" if count <= 20 else "turbo"]
    return [cmap(i if count <= 20 else i / max(count - 1, 1)) for i in range(count)]


# -------------------------------------------------------------------------------------------------------- datasets
def _class_names(dataset: str, split: str) -> list[str] | None:
    import datasets

    from ..data.datasets import FASHION_MNIST_CLASSES, load_dataset_for_pretraining

    if dataset == "fashion_mnist":
        return list(FASHION_MNIST_CLASSES)
    feature = load_dataset_for_pretraining(dataset, split=split).features.get("label")
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _split_images(dataset: str, split: str, indices: list[int]) -> list[np.ndarray]:
    """The images at `indices` of a split, as arrays to show (grayscale (H, W) or RGB (H, W, 3))."""
    from ..data.datasets import decode_image
    from .features import labelled_split

    images, _ = labelled_split(dataset, split, max(indices) + 1, labels=False)
    shown = []
    for index in indices:
        image = images[index] if isinstance(images, torch.Tensor) else decode_image(images[index]["image"])
        array = np.asarray(image.numpy() if isinstance(image, torch.Tensor) else image)
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
            array = array.transpose(1, 2, 0)
        shown.append(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)
    return shown


# ---------------------------------------------------------------------------------------------- MAE reconstruction
@torch.no_grad()
def mae_reconstruction(model, pixel_values: torch.Tensor, mask_ratio: float | None = None, seed: int = 0):
    """(masked image, reconstruction) of one image (`pixel_values` (1, C, H, W)) by an MAE pretraining model, as
    images (1, C, H, W) in the input's normalisation: masked patches are zero (the dataset mean) in the first, the
    decoder's predictions in the second, whose visible patches are the original's (as the paper's figures).
    With `norm_pix_loss` the predictions are per-patch normalised; they are shown with the original patch's mean
    and std. `mask_ratio` defaults to the model's; the mask is drawn with `seed`."""
    from ..modeling.targets import patchify, unpatchify
    from ..processing.masking import RandomMaskGenerator

    patch = _patch_size(model)
    grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
    ratio = model.config.mask_ratio if mask_ratio is None else mask_ratio
    masks = RandomMaskGenerator(ratio)(*grid, generator=torch.Generator().manual_seed(seed))[None]
    model.config.mask_ratio = ratio
    predictions, _ = model.reconstruct(pixel_values, masks)
    patches = patchify(pixel_values, patch)
    if model.config.norm_pix_loss:
        mean, std = patches.mean(-1, keepdim=True), (patches.var(-1, keepdim=True) + 1e-6).sqrt()
        predictions = predictions * std + mean
    masked = torch.where(masks[..., None], torch.zeros_like(patches), patches)
    reconstruction = torch.where(masks[..., None], predictions, patches)
    return unpatchify(masked, patch, grid), unpatchify(reconstruction, patch, grid)


def plot_mae(images: list[np.ndarray], path, size: tuple[int, int] = (900, 300)) -> Path:
    """The original / masked / reconstruction strip."""
    figure = _figure(size)
    axes = figure.subplots(1, 3)
    for axis, image, title in zip(axes, images, ("original", "masked", "reconstruction + visible")):
        _show(axis, image, title, vmin=0, vmax=1)
    figure.tight_layout()
    return _save(figure, path)


# ------------------------------------------------------------------------------------------------------------- CLI
def _size_arguments(parser, width: int, height: int) -> None:
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--width", type=int, default=width, help=f"pixels (default {width})")
    parser.add_argument("--height", type=int, default=height, help=f"pixels (default {height})")


def _model_argument(parser) -> None:
    parser.add_argument("--model", required=True, help="model folder or Hub id (anything AutoModel loads)")


def _dataset_arguments(parser, split: str) -> None:
    parser.add_argument(
        "--dataset", default="fashion_mnist", help="fashion_mnist, an image folder, a saved dataset or a Hub id"
    )
    parser.add_argument("--split", default=split)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cache-dir", default=None, help="cache the features here as safetensors")


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="figure", metavar="FIGURE", required=True)

    attention = sub.add_parser("attention", help="self-attention of the CLS token to the patches, per head (DINO)")
    _model_argument(attention)
    attention.add_argument("--image", required=True, help="image file")
    attention.add_argument("--layer", type=int, default=-1, help="transformer block (default: the last)")
    _size_arguments(attention, 1200, 400)

    pca = sub.add_parser("pca", help="first three principal components of patch features as RGB (DINOv2)")
    _model_argument(pca)
    pca.add_argument("--image", nargs="+", required=True, help="one or more image files (one PCA for all)")
    pca.add_argument(
        "--background-threshold", type=float, default=None,
        help="separate the foreground with the first component above this (in [0, 1]; e.g. 0.5)",
    )  # fmt: skip
    _size_arguments(pca, 800, 400)

    retrieval = sub.add_parser("retrieval", help="query images (test split) and their nearest training images")
    _model_argument(retrieval)
    _dataset_arguments(retrieval, "test")
    retrieval.add_argument("--gallery-split", default="train")
    retrieval.add_argument("--max-gallery", type=int, default=None, help="use only the first N gallery images")
    retrieval.add_argument("--queries", type=int, default=6, help="the first N images of --split are the queries")
    retrieval.add_argument("--k", type=int, default=8, help="neighbours per query")
    _size_arguments(retrieval, 1000, 800)

    curves = sub.add_parser("curves", help="training curves from tensorboard logs, metrics.jsonl, .json or .csv")
    curves.add_argument("--logs", required=True, help="log directory (tensorboard) or a .jsonl/.json/.csv file")
    curves.add_argument("--keys", nargs="+", default=None, help="only scalars whose name contains one of these")
    _size_arguments(curves, 1000, 600)

    tsne_parser = sub.add_parser("tsne", help="t-SNE of the features of a labelled split, coloured by label")
    _model_argument(tsne_parser)
    _dataset_arguments(tsne_parser, "test")
    tsne_parser.add_argument("--max-images", type=int, default=2000, help="use only the first N images")
    tsne_parser.add_argument("--perplexity", type=float, default=30.0)
    tsne_parser.add_argument("--seed", type=int, default=0)
    _size_arguments(tsne_parser, 800, 800)

    mae = sub.add_parser("mae", help="MAE reconstruction: original / masked / reconstruction strip")
    mae.add_argument("--model", required=True, help="an MAE pretraining checkpoint (with its decoder)")
    mae.add_argument("--image", required=True, help="image file")
    mae.add_argument("--mask-ratio", type=float, default=None, help="default: the model's")
    mae.add_argument("--seed", type=int, default=0, help="seed of the random mask")
    _size_arguments(mae, 900, 300)


def _attention(args, size) -> Path:
    from .features import load_model_and_processor

    model, processor = load_model_and_processor(args.model, attn_implementation="eager")
    pixel_values = _pixel_values(processor, [args.image])
    maps = cls_attention_maps(model, pixel_values, args.layer)
    return plot_attention(displayable(pixel_values[0], processor), maps, args.out, size)


def _pca(args, size) -> Path:
    from .features import load_model_and_processor

    model, processor = load_model_and_processor(args.model)
    pixel_values = _pixel_values(processor, args.image)
    colours = pca_rgb(patch_features(model, pixel_values), args.background_threshold)
    return plot_pca([displayable(pixels, processor) for pixels in pixel_values], colours, args.out, size)


def _retrieval(args, size) -> Path:
    from .features import model_split_features

    splits = {args.gallery_split: args.max_gallery, args.split: args.queries}
    features = model_split_features(args.model, args.dataset, splits, args.batch_size, cache_dir=args.cache_dir)
    (gallery, gallery_labels), (queries, query_labels) = features[args.gallery_split], features[args.split]
    similarities, indices = nearest_neighbours(queries, gallery, args.k)
    names = _class_names(args.dataset, args.split)

    def title(label: int, similarity: float | None = None) -> str:
        name = names[label] if names else str(label)
        return name if similarity is None else f"{name} {similarity:.3f}"

    flat = sorted(set(indices.flatten().tolist()))
    gallery_images = dict(zip(flat, _split_images(args.dataset, args.gallery_split, flat)))
    query_images = _split_images(args.dataset, args.split, list(range(queries.shape[0])))
    return plot_retrieval(
        query_images,
        [[gallery_images[i] for i in row] for row in indices.tolist()],
        args.out,
        size,
        query_titles=[f"query: {title(int(label))}" for label in query_labels],
        neighbour_titles=[
            [title(int(gallery_labels[i]), s) for i, s in zip(row, sims)]
            for row, sims in zip(indices.tolist(), similarities.tolist())
        ],
        matches=(gallery_labels[indices] == query_labels[:, None]).tolist(),
    )


def _curves(args, size) -> Path:
    return plot_curves(read_scalars(args.logs), args.out, size, args.keys)


def _tsne(args, size) -> Path:
    from .features import model_split_features

    splits = {args.split: args.max_images}
    features = model_split_features(args.model, args.dataset, splits, args.batch_size, cache_dir=args.cache_dir)
    features, labels = features[args.split]
    points = tsne(features, args.seed, args.perplexity)
    return plot_tsne(points, labels.numpy(), args.out, size, _class_names(args.dataset, args.split))


def _mae(args, size) -> Path:
    from transformers import AutoModelForPreTraining

    from .extract import load_image_processor

    model = AutoModelForPreTraining.from_pretrained(args.model).eval()
    if not hasattr(model, "reconstruct"):
        raise ValueError(f"{args.model} is not an MAE pretraining checkpoint (got {type(model).__name__})")
    processor = load_image_processor(args.model, model.config)
    pixel_values = _pixel_values(processor, [args.image])
    masked, reconstruction = mae_reconstruction(model, pixel_values, args.mask_ratio, args.seed)
    images = [displayable(image[0], processor) for image in (pixel_values, masked, reconstruction)]
    return plot_mae(images, args.out, size)


FIGURES = {
    "attention": _attention, "pca": _pca, "retrieval": _retrieval, "curves": _curves, "tsne": _tsne, "mae": _mae,
}


def run(args) -> int:
    path = FIGURES[args.figure](args, (args.width, args.height))
    print(f"wrote {path} ({args.width}x{args.height})")
    return 0
