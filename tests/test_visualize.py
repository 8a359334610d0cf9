"""`hf-ssl visualize`: every figure is a non-empty PNG of the requested size; the numbers behind them are checked."""

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Dinov2Config, Dinov2Model

from hf_ssl import DinoConfig, DinoModel, SSLViTConfig, processor_for
from hf_ssl.cli import main
from hf_ssl.evaluation.visualize import cls_attention_maps, nearest_neighbours, pca_rgb, plot_curves, read_scalars


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny DINO ViT with one register token (excluded from the attention maps)."""
    backbone = SSLViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            num_register_tokens=1)  # fmt: skip
    torch.manual_seed(0)
    model = DinoModel(DinoConfig(backbone_config=backbone.to_dict()))
    directory = tmp_path_factory.mktemp("model")
    model.save_pretrained(directory)
    processor_for(model.config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for index in range(2):
        path = directory / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory):
    rng = np.random.default_rng(1)

    def split(count):
        labels = [index % 3 for index in range(count)]
        images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in labels]
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)

    directory = tmp_path_factory.mktemp("data") / "labelled"
    datasets.DatasetDict({"train": split(12), "test": split(9)}).save_to_disk(str(directory))
    return str(directory)


def _check_png(path, size):
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 0  # something was drawn


def test_attention_figure(model_dir, image_files, tmp_path):
    out = tmp_path / "attention.png"
    assert main(["visualize", "attention", "--model", str(model_dir), "--image", image_files[0], "--out", str(out),
                 "--width", "600", "--height", "200"]) == 0  # fmt: skip
    _check_png(out, (600, 200))


def test_cls_attention_maps_are_the_cls_row_without_registers(model_dir):
    model = DinoModel.from_pretrained(model_dir).eval()
    pixel_values = torch.randn(1, 3, 32, 32)
    maps = cls_attention_maps(model, pixel_values)
    assert maps.shape == (2, 4, 4)
    attentions = model(pixel_values, output_attentions=True).attentions[-1][0]  # (heads, 1 + 1 + 16, 1 + 1 + 16)
    torch.testing.assert_close(maps.flatten(1), attentions[:, 0, 2:])
    assert (maps.sum(dim=(1, 2)) < 1).all()  # CLS and the register take the rest


def test_attention_maps_of_a_transformers_dinov2():
    config = Dinov2Config(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                          intermediate_size=64, attn_implementation="eager")  # fmt: skip
    model = Dinov2Model(config).eval()
    pixel_values = torch.randn(1, 3, 32, 32)
    maps = cls_attention_maps(model, pixel_values)
    assert maps.shape == (4, 4, 4)
    attentions = model(pixel_values, output_attentions=True).attentions[-1][0]  # (heads, 1 + 16, 1 + 16)
    torch.testing.assert_close(maps.flatten(1), attentions[:, 0, 1:])


def test_pca_rgb_recovers_a_planted_foreground():
    # 1 image, 4x4 patches: a centre 2x2 "object" with features far from the background's
    generator = torch.Generator().manual_seed(0)
    features = 0.01 * torch.randn(1, 4, 4, 8, generator=generator)
    features[0, 1:3, 1:3] += torch.randn(8, generator=generator) * 5 + 0.5 * torch.randn(2, 2, 8, generator=generator)
    colours = pca_rgb(features, background_threshold=0.5)
    foreground = colours.sum(dim=-1) > 0
    expected = torch.zeros(1, 4, 4, dtype=torch.bool)
    expected[0, 1:3, 1:3] = True
    assert torch.equal(foreground, expected)
    plain = pca_rgb(features)
    assert plain.shape == (1, 4, 4, 3) and plain.min() >= 0 and plain.max() <= 1
    assert torch.allclose(plain.flatten(0, 2).amax(dim=0), torch.ones(3))  # each component spans [0, 1]


def test_pca_figure(model_dir, image_files, tmp_path):
    out = tmp_path / "pca.png"
    assert main(["visualize", "pca", "--model", str(model_dir), "--image", *image_files, "--out", str(out),
                 "--width", "320", "--height", "240", "--background-threshold", "0.3"]) == 0  # fmt: skip
    _check_png(out, (320, 240))


def test_retrieval_figure(model_dir, labelled_dir, tmp_path):
    out = tmp_path / "retrieval.png"
    assert main(["visualize", "retrieval", "--model", str(model_dir), "--dataset", labelled_dir, "--queries", "3",
                 "--k", "4", "--out", str(out), "--width", "500", "--height", "400"]) == 0  # fmt: skip
    _check_png(out, (500, 400))


def test_nearest_neighbours_by_cosine():
    gallery = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    similarities, indices = nearest_neighbours(torch.tensor([[3.0, 0.1]]), gallery, k=2)
    assert indices.tolist() == [[0, 2]]
    assert similarities[0, 1].item() == pytest.approx((3.0 + 0.1) / (np.hypot(3.0, 0.1) * np.sqrt(2)), rel=1e-6)


def test_curves_from_jsonl_csv_and_tensorboard(tmp_path):
    rows = [{"step": step, "loss": 2.0 / step, "lr": 0.1, "note": "text"} for step in range(1, 6)]
    jsonl = tmp_path / "run" / "metrics.jsonl"
    jsonl.parent.mkdir()
    jsonl.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    series = read_scalars(tmp_path / "run")  # a directory without event files: its metrics.jsonl
    assert set(series) == {"loss", "lr"} and series["loss"] == [(s, 2.0 / s) for s in range(1, 6)]
    csv_file = tmp_path / "metrics.csv"
    csv_file.write_text("step,loss\n2,0.5\n1,1.0\n")
    assert read_scalars(csv_file) == {"loss": [(1, 1.0), (2, 0.5)]}

    out = tmp_path / "curves.png"
    assert main(["visualize", "curves", "--logs", str(jsonl), "--out", str(out), "--width", "400",
                 "--height", "300"]) == 0  # fmt: skip
    _check_png(out, (400, 300))

    writer_module = pytest.importorskip("torch.utils.tensorboard")
    pytest.importorskip("tensorboard")
    logs = tmp_path / "tb"
    writer = writer_module.SummaryWriter(str(logs / "dino"))
    for step in range(3):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    writer.close()
    series = read_scalars(logs)
    assert [step for step, _ in series["train/loss"]] == [0, 1, 2]
    assert series["train/loss"][2][1] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no logged scalar matches"):
        plot_curves(series, tmp_path / "none.png", keys=["accuracy"])


def test_tsne_figure(model_dir, labelled_dir, tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "tsne.png"
    assert main(["visualize", "tsne", "--model", str(model_dir), "--dataset", labelled_dir, "--split", "train",
                 "--out", str(out), "--width", "300", "--height", "300"]) == 0  # fmt: skip
    _check_png(out, (300, 300))


def test_bad_figure_size(tmp_path):
    with pytest.raises(ValueError, match="at least 16x16"):
        plot_curves({"loss": [(0, 1.0)]}, tmp_path / "x.png", size=(8, 8))
