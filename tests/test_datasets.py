"""Pretraining datasets: builtin Fashion-MNIST, image folders with a corrupt file, saved datasets, column detection,
the views datasets (map-style and streaming, sharded) and the skipped-image count."""

import gzip
import io
import os

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_ssl.data import datasets as ssl_datasets
from hf_ssl.data.datasets import (
    SSLDataset,
    SSLIterableDataset,
    array_dataset,
    build_ssl_dataset,
    decode_image,
    fashion_mnist_arrays,
    image_column_of,
    load_dataset_for_pretraining,
)
from hf_ssl.processing.views import TwoViewTransform, collate_views

FASHION_FILES = [
    os.path.join(ssl_datasets.FASHION_MNIST_DIR, f"{p}-{k}-ubyte.gz")
    for p in ("train", "t10k")
    for k in ("images-idx3", "labels-idx1")
]
needs_fashion = pytest.mark.skipif(
    not all(os.path.isfile(f) for f in FASHION_FILES), reason="Debian's dataset-fashion-mnist is not installed"
)


def identity_views(image):
    """A 'views transform' that returns the decoded image itself, to check what the dataset decoded."""
    return {"global_views": [image]}


def small_transform():
    return TwoViewTransform(size=8, num_channels=3)


def save_png(path, seed, size=(12, 10)):
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


@needs_fashion
def test_fashion_mnist_builtin_matches_the_raw_files():
    with gzip.open(FASHION_FILES[1], "rb") as f:
        raw_labels = f.read()
    with gzip.open(FASHION_FILES[0], "rb") as f:
        raw_images = f.read(16 + 28 * 28)
    train = load_dataset_for_pretraining("fashion_mnist", split="train")
    test = load_dataset_for_pretraining("fashion_mnist", split="test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.column_names == ["image", "label"]
    assert train.features["label"].names[0] == "T-shirt/top"
    assert train[0]["label"] == raw_labels[8]  # IDX: 8-byte header, then one byte per label
    first_image = np.frombuffer(raw_images[16:], np.uint8).reshape(28, 28)
    assert np.array_equal(np.asarray(train[0]["image"], dtype=np.uint8), first_image)

    images, labels = fashion_mnist_arrays("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(10))


@needs_fashion
def test_fashion_mnist_ssl_dataset_reads_the_right_rows_after_selection():
    images, labels = fashion_mnist_arrays("test")
    data = load_dataset_for_pretraining("fashion_mnist", split="test").select([7, 3, 9999])
    items = SSLDataset(data, identity_views).__getitems__([2, 0])
    for (views, label), row in zip(items, (9999, 7)):
        assert torch.equal(views["global_views"][0], torch.from_numpy(images[row].copy()).unsqueeze(0))
        assert label == labels[row]


def test_fashion_mnist_missing_everywhere_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(ssl_datasets, "FASHION_MNIST_DIR", str(tmp_path))

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset_for_pretraining("fashion_mnist")
    with pytest.raises(ValueError, match="splits"):
        fashion_mnist_arrays("validation")


def test_imagefolder_with_a_corrupt_file_yields_good_samples_and_counts_the_bad(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    pixels = {f"img{i}.png": save_png(folder / f"img{i}.png", seed=i) for i in range(3)}
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    data = load_dataset_for_pretraining(str(folder), cache_dir=str(tmp_path / "cache"))
    assert len(data) == 4 and data.column_names == ["image"]

    dataset = SSLDataset(data, identity_views)
    decoded = [dataset[i] for i in range(len(dataset))]
    good = [item for item in decoded if item is not None]
    assert len(good) == 3 and sum(item is None for item in decoded) == 1
    expected = sorted(p.tobytes() for p in pixels.values())
    assert sorted(np.asarray(views["global_views"][0]).tobytes() for views, _ in good) == expected

    loader = torch.utils.data.DataLoader(
        SSLDataset(data, small_transform()), batch_size=4, num_workers=1, collate_fn=collate_views
    )
    (batch,) = list(loader)  # decoded and collated in a worker process: the count still arrives
    assert batch["global_views"].shape == (2, 3, 3, 8, 8)
    assert batch["num_skipped"].item() == 1 and "labels" not in batch


def test_saved_dataset_dir_loads_and_picks_its_split(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 6, 7), dtype=np.uint8)
    array_dataset(images, np.arange(5)).save_to_disk(str(tmp_path / "single"))
    data = load_dataset_for_pretraining(str(tmp_path / "single"))
    assert len(data) == 5 and data["label"][:] == [0, 1, 2, 3, 4]
    first = SSLDataset(data, identity_views)[4][0]["global_views"][0]
    assert torch.equal(first, torch.from_numpy(images[4]).unsqueeze(0))

    pngs = []
    for i in range(2):
        buffer = io.BytesIO()
        Image.fromarray(images[i]).save(buffer, format="PNG")
        pngs.append({"bytes": buffer.getvalue(), "path": None})
    splits = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"photo": pngs}, features=datasets.Features(photo=datasets.Image())),
        test=datasets.Dataset.from_dict({"photo": pngs[:1]}, features=datasets.Features(photo=datasets.Image())),
    )
    splits.save_to_disk(str(tmp_path / "dict"))
    test = load_dataset_for_pretraining(str(tmp_path / "dict"), split="test")
    assert len(test) == 1 and test.column_names == ["image"]
    (views, label), = SSLDataset(test, identity_views).__getitems__([0])
    assert label is None and np.array_equal(np.asarray(views["global_views"][0].convert("L")), images[0])
    with pytest.raises(ValueError, match=r"splits \['test', 'train'\], not 'validation'"):
        load_dataset_for_pretraining(str(tmp_path / "dict"), split="validation")


def test_image_column_detection_labels_and_errors(tmp_path):
    arrays = [np.zeros((4, 4), dtype=np.uint8)] * 2
    by_feature = datasets.Dataset.from_dict(
        {"caption": ["a", "b"], "photo": [Image.new("RGB", (4, 4))] * 2, "labels": [1, 0]},
        features=datasets.Features(
            caption=datasets.Value("string"), photo=datasets.Image(), labels=datasets.Value("int64")
        ),
    )
    assert image_column_of(by_feature) == "photo"
    by_feature.save_to_disk(str(tmp_path / "by_feature"))
    loaded = load_dataset_for_pretraining(str(tmp_path / "by_feature"))
    assert loaded.column_names == ["image", "label"] and loaded["label"][:] == [1, 0]

    by_name = datasets.Dataset.from_dict({"pixel_values": arrays, "label": ["cat", "dog"]})
    assert image_column_of(by_name) == "pixel_values"
    by_name.save_to_disk(str(tmp_path / "by_name"))
    assert load_dataset_for_pretraining(str(tmp_path / "by_name")).column_names == ["image"]  # string labels dropped

    by_flag = datasets.Dataset.from_dict({"scan": arrays, "id": [0, 1]})
    by_flag.save_to_disk(str(tmp_path / "by_flag"))
    with pytest.raises(ValueError, match=r"no image column found.*\['scan', 'id'\].*image_column"):
        load_dataset_for_pretraining(str(tmp_path / "by_flag"))
    assert load_dataset_for_pretraining(str(tmp_path / "by_flag"), image_column="scan").column_names == ["image"]
    with pytest.raises(ValueError, match="'xray' is not a column"):
        load_dataset_for_pretraining(str(tmp_path / "by_flag"), image_column="xray")


def test_decode_image_accepts_arrays_bytes_and_rejects_bad_data():
    hwc = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert torch.equal(decode_image(hwc), torch.from_numpy(hwc).permute(2, 0, 1))
    assert decode_image([[1, 2], [3, 4]]).shape == (1, 2, 2)
    buffer = io.BytesIO()
    Image.fromarray(hwc).save(buffer, format="PNG")
    assert np.array_equal(np.asarray(decode_image({"bytes": buffer.getvalue(), "path": None})), hwc)
    with pytest.raises(ValueError, match="undecodable"):
        decode_image(b"garbage")
    with pytest.raises(ValueError, match="0-255"):
        decode_image(np.ones((4, 4), dtype=np.float32))
    with pytest.raises(TypeError, match="int"):
        decode_image(3)


def rows(count):
    return [{"image": np.full((2, 2), i, dtype=np.uint8), "label": i} for i in range(count)]


def ids(samples):
    return sorted(int(views["global_views"][0][0, 0, 0]) for views, _ in samples)


def test_iterable_dataset_shards_plain_iterables_by_rank_and_worker():
    shards = [list(SSLIterableDataset(rows(10), identity_views, rank=r, world_size=2)) for r in range(2)]
    assert ids(shards[0]) == [0, 2, 4, 6, 8] and ids(shards[1]) == [1, 3, 5, 7, 9]
    assert all(label == int(views["global_views"][0][0, 0, 0]) for views, label in shards[0])

    loader = torch.utils.data.DataLoader(
        SSLIterableDataset(rows(12), identity_views, rank=1, world_size=2), batch_size=None, num_workers=2
    )
    assert ids(loader) == [1, 3, 5, 7, 9, 11]  # the two workers split rank 1's part, nothing twice
    with pytest.raises(ValueError, match="rank"):
        SSLIterableDataset(rows(2), identity_views, rank=2, world_size=2)


def test_streaming_datasets_are_split_by_node_and_skip_bad_images(tmp_path):
    images = np.stack([np.full((3, 3), i, dtype=np.uint8) for i in range(8)])
    data = load_dataset_for_pretraining(str(_saved(tmp_path, images)), streaming=True)
    assert isinstance(data, datasets.IterableDataset)
    parts = [list(build_ssl_dataset(data, identity_views, rank=r, world_size=2)) for r in range(2)]
    assert sorted(ids(parts[0]) + ids(parts[1])) == list(range(8)) and not set(ids(parts[0])) & set(ids(parts[1]))

    folder = tmp_path / "folder"
    folder.mkdir()
    save_png(folder / "good.png", seed=0)
    (folder / "bad.jpg").write_bytes(b"not a jpeg")
    stream = load_dataset_for_pretraining(str(folder), streaming=True)
    samples = list(SSLIterableDataset(stream, small_transform(), rank=0, world_size=1))
    assert sum(s is None for s in samples) == 1 and len(samples) == 2
    assert collate_views(samples)["num_skipped"].item() == 1


def _saved(tmp_path, images):
    path = tmp_path / "saved"
    array_dataset(images, np.arange(len(images))).save_to_disk(str(path))
    return path
