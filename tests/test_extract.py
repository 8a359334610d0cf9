"""`hf-ssl extract`, `extract_features` and the `image-feature-extraction` pipeline on a saved tiny DinoModel."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import pipeline

from hf_ssl import DinoConfig, DinoModel, SSLViTConfig, processor_for
from hf_ssl.cli import main
from hf_ssl.data import load_image
from hf_ssl.evaluation.extract import extract_features, find_images

IMAGE_NAMES = ["b.png", "a.png", "sub/c.png", "sub/deeper/d.png", "e.PNG"]


@pytest.fixture(scope="module")
def tiny_dino():
    backbone = SSLViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    torch.manual_seed(0)
    return DinoModel(DinoConfig(backbone_config=backbone.to_dict())).eval()


@pytest.fixture(scope="module")
def model_dir(tiny_dino, tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    tiny_dino.save_pretrained(directory)
    processor_for(tiny_dino.config).save_pretrained(directory)
    return directory


@pytest.fixture
def image_dir(tmp_path):
    directory = tmp_path / "images"
    rng = np.random.default_rng(0)
    for index, name in enumerate(IMAGE_NAMES):
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        size = (36 + 3 * index, 40 - 2 * index, 3)
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(directory / name, format="PNG")
    (directory / "notes.txt").write_text("not an image, not listed")
    return directory


def direct_features(model, paths):
    """One image at a time through the processor and the model: the reference for batched extraction."""
    processor = processor_for(model.config)
    with torch.inference_mode():
        return torch.cat([model(**processor(load_image(p), return_tensors="pt")).pooler_output for p in paths])


def read(out):
    with safe_open(str(out), framework="pt") as handle:
        return handle.get_tensor("features"), handle.metadata()


def test_pipeline_pool_returns_pooler_output(tiny_dino, model_dir):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (45, 50, 3), dtype=np.uint8))
    extractor = pipeline("image-feature-extraction", model=str(model_dir), pool=True)
    features = extractor(image, return_tensors=True)
    with torch.inference_mode():
        expected = tiny_dino(**processor_for(tiny_dino.config)(image, return_tensors="pt")).pooler_output
    assert features.shape == (1, 32)
    torch.testing.assert_close(features, expected, atol=0, rtol=0)


def test_find_images_is_recursive_and_sorted(image_dir):
    relative = [path.relative_to(image_dir).as_posix() for path in find_images(image_dir)]
    assert relative == sorted(IMAGE_NAMES)
    with pytest.raises(ValueError, match="not a directory"):
        find_images(image_dir / "a.png")


def test_cli_extract_writes_model_features(tiny_dino, model_dir, image_dir, tmp_path):
    out = tmp_path / "out" / "feats.safetensors"
    args = ["extract", "--model", str(model_dir), "--images", str(image_dir), "--out", str(out), "--batch-size", "2"]
    assert main(args) == 0
    features, metadata = read(out)
    paths = json.loads(metadata["paths"])
    assert paths == sorted(IMAGE_NAMES)
    assert json.loads(metadata["skipped"]) == []
    assert features.dtype == torch.float32 and features.shape == (5, 32)
    torch.testing.assert_close(features, direct_features(tiny_dino, [image_dir / p for p in paths]), atol=1e-5, rtol=0)
    assert [path.name for path in out.parent.iterdir()] == ["feats.safetensors"]  # no temporary file left


def test_cli_extract_builds_processor_from_config(tiny_dino, tmp_path, image_dir):
    bare = tmp_path / "bare"
    tiny_dino.save_pretrained(bare)  # no preprocessor_config.json
    out = tmp_path / "feats.safetensors"
    assert main(["extract", "--model", str(bare), "--images", str(image_dir), "--out", str(out)]) == 0
    features, metadata = read(out)
    paths = [image_dir / p for p in json.loads(metadata["paths"])]
    torch.testing.assert_close(features, direct_features(tiny_dino, paths), atol=1e-5, rtol=0)


def test_bad_image_stops_by_default(model_dir, image_dir, tmp_path, capsys):
    (image_dir / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    out = tmp_path / "feats.safetensors"
    out.write_bytes(b"previous run")
    assert main(["extract", "--model", str(model_dir), "--images", str(image_dir), "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert "broken.png" in error and "--skip-errors" in error
    assert out.read_bytes() == b"previous run"


def test_skip_errors_lists_the_bad_image(tiny_dino, model_dir, image_dir, tmp_path, capsys):
    (image_dir / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    out = tmp_path / "feats.safetensors"
    args = ["extract", "--model", str(model_dir), "--images", str(image_dir), "--out", str(out), "--skip-errors"]
    assert main(args) == 0
    assert "broken.png" in capsys.readouterr().err
    features, metadata = read(out)
    assert json.loads(metadata["skipped"]) == ["sub/broken.png"]
    paths = json.loads(metadata["paths"])
    assert paths == sorted(IMAGE_NAMES)
    torch.testing.assert_close(features, direct_features(tiny_dino, [image_dir / p for p in paths]), atol=1e-5, rtol=0)


def test_extract_features_python_api(tiny_dino, image_dir):
    paths = find_images(image_dir)
    images = [load_image(path) for path in paths]
    processor = processor_for(tiny_dino.config)
    features, kept, skipped = extract_features(tiny_dino, processor, images + [image_dir / "nope.png"], batch_size=4,
                                               skip_errors=True, progress=False)
    assert kept == images and [item for item, _ in skipped] == [image_dir / "nope.png"]
    torch.testing.assert_close(features, direct_features(tiny_dino, paths), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="nope.png"):
        extract_features(tiny_dino, processor, [image_dir / "nope.png"], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(tiny_dino, processor, paths, batch_size=0)
