"""Pretraining datasets: any `datasets` source as (image, label) rows, and the torch datasets that turn rows into views.

`load_dataset_for_pretraining` accepts the builtin name `fashion_mnist` (Debian's `dataset-fashion-mnist` files read
straight into uint8 arrays, else the Hub copy), a local image folder, a directory written by `save_to_disk`, or a Hub
id, and returns a `datasets.Dataset` (`datasets.IterableDataset` when streaming) with an `image` column and, when the
source has integer labels, a `label` column.

`SSLDataset` (map-style) and `SSLIterableDataset` (streaming) decode each image and apply a views transform. An image
that cannot be decoded is logged and yields `None`; `hf_ssl.processing.views.collate_views` drops those and reports
how many in the batch's `num_skipped`, so the count reaches the main process whatever the number of workers.
"""

import gzip
import io
import itertools
import logging
import os

import datasets
import datasets.distributed
import numpy as np
import pyarrow as pa
import torch
from datasets.table import InMemoryTable
from PIL import Image

from .images import load_image

logger = logging.getLogger(__name__)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_FASHION_MNIST_FILE_PREFIX = {"train": "train", "test": "t10k"}
IMAGE_COLUMN_NAMES = ("image", "img", "pixel_values")
LABEL_COLUMN_NAMES = ("label", "labels")


def _read_idx(path: str) -> np.ndarray:
    """An IDX file (the MNIST format: big-endian header, then raw values), gzip-compressed, as a numpy array."""
    with gzip.open(path, "rb") as file:
        raw = file.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_arrays(split: str = "train", root: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST `split` ("train" | "test") from the raw IDX files: images uint8 (N, 28, 28), labels int64 (N,).

    `root` defaults to `FASHION_MNIST_DIR` (Debian's `dataset-fashion-mnist`). `FileNotFoundError` if absent.
    """
    if split not in _FASHION_MNIST_FILE_PREFIX:
        raise ValueError(f"Fashion-MNIST has splits {sorted(_FASHION_MNIST_FILE_PREFIX)}, got {split!r}")
    prefix = os.path.join(root or FASHION_MNIST_DIR, _FASHION_MNIST_FILE_PREFIX[split])
    images = _read_idx(f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(f"{prefix}-*: images {images.shape} and labels {labels.shape} do not match")
    return images, labels


def array_dataset(images: np.ndarray, labels: np.ndarray | None = None, label_names=None, name: str = "arrays"):
    """A `datasets.Dataset` over uint8 images (N, H, W) without copying them: an `Array2D` `image` column (+ `label`).

    The arrow column is built on the numpy buffer directly (no per-image encoding, no hashing), so 60k images take
    milliseconds; `SSLDataset` reads such fixed-shape columns back as one numpy view.
    """
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"array_dataset expects uint8 images (N, H, W), got {images.dtype} {images.shape}")
    images = np.ascontiguousarray(images)
    count, height, width = images.shape
    rows = pa.ListArray.from_arrays(
        pa.array(np.arange(0, count * height * width + 1, width, dtype=np.int32)), pa.array(images.reshape(-1))
    )
    grid = pa.ListArray.from_arrays(pa.array(np.arange(0, count * height + 1, height, dtype=np.int32)), rows)
    features = {"image": datasets.Array2D(shape=(height, width), dtype="uint8")}
    columns = {"image": pa.ExtensionArray.from_storage(features["image"](), grid)}
    if labels is not None:
        features["label"] = datasets.ClassLabel(names=list(label_names)) if label_names else datasets.Value("int64")
        columns["label"] = pa.array(np.asarray(labels, dtype=np.int64))
    table = InMemoryTable(pa.table(columns))
    info = datasets.DatasetInfo(features=datasets.Features(features))
    return datasets.Dataset(table, info=info, fingerprint=f"{name}-{count}x{height}x{width}")


def _fashion_mnist(split: str) -> datasets.Dataset:
    """The builtin Fashion-MNIST: Debian's raw files if present, else the Hub dataset, else a clear error."""
    try:
        images, labels = fashion_mnist_arrays(split)
        return array_dataset(images, labels, FASHION_MNIST_CLASSES, name=f"fashion_mnist-{split}")
    except FileNotFoundError as missing:
        try:
            return datasets.load_dataset(FASHION_MNIST_HUB_ID, split=split)
        except Exception as error:
            raise FileNotFoundError(
                f"fashion_mnist: the raw files are not in {FASHION_MNIST_DIR} ({missing.filename} is missing) and the "
                f"Hub dataset {FASHION_MNIST_HUB_ID!r} could not be loaded ({type(error).__name__}: {error}). Install "
                "the files with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or go online once."
            ) from error


def _is_saved_dataset(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, name)) for name in ("dataset_dict.json", "state.json"))


def _load_saved(path: str, split: str) -> datasets.Dataset:
    data = datasets.load_from_disk(path)
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise ValueError(f"{path}: saved dataset has splits {sorted(data)}, not {split!r}")
        data = data[split]
    return data


def image_column_of(dataset) -> str:
    """The image column: the first `datasets.Image` feature, else a column named image / img / pixel_values."""
    features = dataset.features or {}
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name
    columns = dataset.column_names or list(features)
    for name in IMAGE_COLUMN_NAMES:
        if name in columns:
            return name
    raise ValueError(
        f"no image column found: no datasets.Image feature and none of {list(IMAGE_COLUMN_NAMES)} among the columns "
        f"{columns}; name it with image_column= (--image-column)"
    )


def label_column_of(dataset) -> str | None:
    """The label column (`label` or `labels`) when it holds integer class ids (or its type is unknown), else None."""
    features = dataset.features
    columns = dataset.column_names or list(features or {})
    for name in LABEL_COLUMN_NAMES:
        if name not in columns:
            continue
        feature = features.get(name) if features else None
        if feature is None or isinstance(feature, datasets.ClassLabel):
            return name
        if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
            return name
    return None


def _standard_columns(data, image_column: str | None):
    """`data` reduced to `image` (+ `label`) columns, renamed to those names."""
    columns = data.column_names or list(data.features or {})
    if image_column is None:
        image_column = image_column_of(data)
    elif columns and image_column not in columns:
        raise ValueError(f"image_column {image_column!r} is not a column of the dataset; columns: {columns}")
    label_column = label_column_of(data)
    keep = [image_column] + ([label_column] if label_column and label_column != image_column else [])
    if columns and set(columns) != set(keep):
        data = data.select_columns(keep)
    for old, new in zip(keep, ("image", "label")):
        if old != new:
            data = data.rename_column(old, new)
    return data


def load_dataset_for_pretraining(
    dataset: str,
    split: str = "train",
    image_column: str | None = None,
    streaming: bool = False,
    cache_dir: str | None = None,
):
    """Images (+ labels) for pretraining from a builtin name, a local folder, a saved dataset dir or a Hub id.

    - `fashion_mnist`: Debian's raw files as uint8 arrays (~0.5 s for 60k), else `zalando-datasets/fashion_mnist`;
    - a directory written by `save_to_disk` (a `DatasetDict` gives its `split`);
    - any other directory: `datasets.load_dataset("imagefolder", data_dir=...)` (subfolders become labels);
    - anything else: a Hub dataset id (honours `HF_HUB_OFFLINE=1` and the local cache).

    Returns a `datasets.Dataset` (an `IterableDataset` when `streaming`) with an `image` column (the first
    `datasets.Image` feature, else a column named image / img / pixel_values, or `image_column`) and a `label`
    column when the source has integer labels (`label` / `labels`).
    """
    if not isinstance(dataset, (str, os.PathLike)):
        raise TypeError(f"dataset must be a name, a path or a Hub id, got {type(dataset).__name__}")
    dataset = os.fspath(dataset)
    if dataset == "fashion_mnist":
        data = _fashion_mnist(split)
    elif os.path.isdir(dataset):
        if _is_saved_dataset(dataset):
            data = _load_saved(dataset, split)
        else:
            data = datasets.load_dataset(
                "imagefolder", data_dir=dataset, split=split, streaming=streaming, cache_dir=cache_dir
            )
    elif os.path.exists(dataset):
        raise ValueError(f"{dataset} is a file; pass an image folder, a saved dataset directory or a Hub id")
    else:
        data = datasets.load_dataset(dataset, split=split, streaming=streaming, cache_dir=cache_dir)
    if streaming and isinstance(data, datasets.Dataset):
        data = data.to_iterable_dataset()
    return _standard_columns(data, image_column)


def _decode_bytes(data: bytes) -> Image.Image:
    """An RGB PIL image from encoded bytes; `ValueError` if they are not a readable image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return load_image(image)
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        raise ValueError(f"undecodable image bytes ({type(error).__name__}: {error})") from error


def decode_image(value) -> Image.Image | torch.Tensor:
    """A dataset cell as something a views transform takes: an RGB PIL image or a uint8 tensor (C, H, W).

    Accepts `datasets.Image(decode=False)` dicts (`bytes` / `path`), paths, encoded bytes, PIL images and uint8
    arrays (H, W), (C, H, W) or (H, W, C). `ValueError` for an image that cannot be decoded.
    """
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        value = value.get("bytes") or value.get("path")
        if value is None:
            raise ValueError("image cell has neither bytes nor a path")
    if isinstance(value, (bytes, bytearray)):
        return _decode_bytes(value)
    if isinstance(value, (str, os.PathLike, Image.Image)):
        return load_image(value)
    if isinstance(value, (list, np.ndarray, torch.Tensor)):
        return _array_to_tensor(value)
    raise TypeError(f"cannot read an image from a {type(value).__name__}")


def _array_to_tensor(value) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(value) if isinstance(value, list) else value)
    if tensor.dtype != torch.uint8:
        if tensor.is_floating_point() or tensor.numel() and (tensor.min() < 0 or tensor.max() > 255):
            raise ValueError(f"array images must hold 0-255 integers, got {tensor.dtype}")
        tensor = tensor.to(torch.uint8)
    if tensor.ndim == 2:
        return tensor.unsqueeze(0)
    if tensor.ndim == 3 and tensor.shape[0] not in (1, 3) and tensor.shape[-1] in (1, 3):
        return tensor.permute(2, 0, 1)
    if tensor.ndim == 3 and tensor.shape[0] in (1, 3):
        return tensor
    raise ValueError(f"array image of shape {tuple(tensor.shape)} is not (H, W), (C, H, W) or (H, W, C), C in {{1, 3}}")


def _undecoded(data, column: str):
    """`data` with an `Image` column left as bytes/paths, so bad files reach our decoder instead of raising in arrow."""
    feature = (data.features or {}).get(column)
    if isinstance(feature, datasets.Image) and feature.decode:
        return data.cast_column(column, datasets.Image(decode=False))
    return data


def _fixed_shape_arrays(data: datasets.Dataset, column: str, label_column: str | None):
    """Zero-copy numpy views of an `Array2D`/`Array3D` uint8 image column (N, ...) and of the labels (or None)."""
    if data._indices is not None:  # a selection/shuffle: the table order is not the dataset's order
        data = data.flatten_indices()
    shape = data.features[column].shape
    chunks = data.data.column(column).chunks
    chunks = [chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk for chunk in chunks]
    for _ in shape:
        chunks = [chunk.flatten() for chunk in chunks]
    pixels = np.concatenate([chunk.to_numpy(zero_copy_only=False) for chunk in chunks]).reshape((len(data), *shape))
    labels = None if label_column is None else data.data.column(label_column).to_numpy().astype(np.int64, copy=False)
    return pixels, labels


class _ViewsSamples:
    """Turns one (image cell, label) into a `(views, label)` sample, or None (logged) if the image is undecodable."""

    def __init__(self, transform, image_column: str, label_column: str | None):
        if not callable(transform):
            raise TypeError(f"transform must be callable (a views transform), got {type(transform).__name__}")
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column

    def sample(self, image, label):
        try:
            image = decode_image(image)
        except ValueError as error:
            logger.warning("skipping an undecodable image: %s", error)
            return None
        return self.transform(image), (None if label is None else int(label))


class SSLDataset(torch.utils.data.Dataset, _ViewsSamples):
    """Map-style views dataset over a `datasets.Dataset`: item i is `(views, label or None)`, or None if undecodable.

    Use with `collate_views`, which drops the None items and counts them in `num_skipped`. `Array2D`/`Array3D` image
    columns (the builtin Fashion-MNIST) are read as one numpy view; other images are decoded here with
    `hf_ssl.data.images.load_image`. `__getitems__` reads a whole batch of rows in one arrow call.
    """

    def __init__(self, dataset: datasets.Dataset, transform, image_column: str | None = None, label_column="auto"):
        if not isinstance(dataset, datasets.Dataset):
            raise TypeError(f"SSLDataset wraps a datasets.Dataset, got {type(dataset).__name__} (streaming: use "
                            "SSLIterableDataset)")  # fmt: skip
        image_column = image_column or image_column_of(dataset)
        label_column = label_column_of(dataset) if label_column == "auto" else label_column
        _ViewsSamples.__init__(self, transform, image_column, label_column)
        self.dataset = _undecoded(dataset, image_column)
        feature = dataset.features[image_column]
        self._fixed_shape = isinstance(feature, (datasets.Array2D, datasets.Array3D)) and feature.dtype == "uint8"
        self._pixels = None
        self._labels = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _arrays(self) -> np.ndarray | None:
        """Lazily (per worker process) the numpy view of a fixed-shape image column, with the labels; else None."""
        if self._fixed_shape and self._pixels is None:
            self._pixels, self._labels = _fixed_shape_arrays(self.dataset, self.image_column, self.label_column)
        return self._pixels

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_pixels"] = state["_labels"] = None  # rebuilt from the (memory-mapped or shared) table in each worker
        return state

    def __getitem__(self, index: int):
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list:
        pixels = self._arrays()
        if pixels is not None:
            images = torch.from_numpy(pixels[indices])  # fancy indexing copies: a writable batch of arrays
            labels = self._labels[indices] if self._labels is not None else [None] * len(indices)
            return [self.sample(image, label) for image, label in zip(images, labels)]
        rows = self.dataset[list(indices)]
        labels = rows[self.label_column] if self.label_column else [None] * len(indices)
        return [self.sample(image, label) for image, label in zip(rows[self.image_column], labels)]


def _rank_and_world_size() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class SSLIterableDataset(torch.utils.data.IterableDataset, _ViewsSamples):
    """Streaming views dataset: yields `(views, label or None)` or None (undecodable), sharded across processes/workers.

    Each process (`rank` of `world_size`, by default read from `torch.distributed` or RANK/WORLD_SIZE when built)
    sees a disjoint part of the stream, and each DataLoader worker of a process a disjoint part of that:
    - a `datasets.IterableDataset` is split with `datasets.distributed.split_dataset_by_node` (whole shards when the
      shard count divides `world_size`, else every world_size-th example), and `datasets` gives the workers of a
      process disjoint shards itself (workers beyond the shard count stay idle);
    - any other iterable is split example-wise: a process keeps example i when i % world_size == rank, and its
      workers take turns over those.
    Do not let another layer shard it again (e.g. `accelerate.prepare` of its DataLoader: pass rank=0, world_size=1
    there, or do not prepare the loader).
    """

    def __init__(self, dataset, transform, image_column: str | None = None, label_column="auto", rank=None,
                 world_size=None):  # fmt: skip
        is_hf = isinstance(dataset, (datasets.IterableDataset, datasets.Dataset))
        image_column = image_column or (image_column_of(dataset) if is_hf else "image")
        label_column = (label_column_of(dataset) if is_hf else "label") if label_column == "auto" else label_column
        _ViewsSamples.__init__(self, transform, image_column, label_column)
        if isinstance(dataset, datasets.Dataset):
            dataset = dataset.to_iterable_dataset()
        self.dataset = _undecoded(dataset, image_column) if is_hf else dataset
        default_rank, default_world_size = _rank_and_world_size()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world_size if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}")

    def set_epoch(self, epoch: int) -> None:
        """Forwarded to a `datasets.IterableDataset` so its shuffling differs per epoch."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def _rows(self):
        if isinstance(self.dataset, datasets.IterableDataset):
            if self.world_size == 1:
                return iter(self.dataset)
            return iter(datasets.distributed.split_dataset_by_node(self.dataset, self.rank, self.world_size))
        worker = torch.utils.data.get_worker_info()
        num_workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        # rank r keeps the examples i with i % world_size == r whatever the number of workers sharing them
        slot, stride = worker_id * self.world_size + self.rank, self.world_size * num_workers
        return itertools.islice(iter(self.dataset), slot, None, stride)

    def __iter__(self):
        for row in self._rows():
            label = row.get(self.label_column) if self.label_column else None
            yield self.sample(row[self.image_column], label)


def build_ssl_dataset(dataset, transform, **kwargs):
    """`SSLDataset` for a `datasets.Dataset`, `SSLIterableDataset` for anything iterable (streaming)."""
    if isinstance(dataset, datasets.Dataset):
        return SSLDataset(dataset, transform, **kwargs)
    return SSLIterableDataset(dataset, transform, **kwargs)
