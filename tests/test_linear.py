"""Linear probe (SGD and L-BFGS), few-shot evaluation, the shared features cache and the `hf-ssl eval` commands."""

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from sklearn.linear_model import LogisticRegression

from hf_ssl import DinoConfig, DinoModel, SSLViTConfig, processor_for
from hf_ssl.cli import main
from hf_ssl.data.datasets import array_dataset
from hf_ssl.evaluation.features import array_pixel_values, model_split_features
from hf_ssl.evaluation.fewshot import few_shot, few_shot_indices
from hf_ssl.evaluation.linear import linear_probe, train_lbfgs_probe, train_sgd_probe


def _separable(count: int, dim: int = 16, classes: int = 4, seed: int = 0, scale: float = 1.0):
    """Features labelled by which of `classes` random directions they project on most, with a margin."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(classes, dim, generator=generator)
    features = torch.randn(count * 3, dim, generator=generator)
    scores = features @ directions.T
    top2 = scores.topk(2, dim=1).values
    keep = (top2[:, 0] - top2[:, 1]) > 0.5  # a margin: linearly separable with room to spare
    features = features[keep][:count]
    return scale * features, scores[keep][:count].argmax(dim=1)


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_linear_probe_separates_separable_features(solver, batchnorm):
    features, labels = _separable(800, dim=8, seed=0, scale=10.0)  # large raw features: BatchNorm / sweep must cope
    train_x, train_y, test_x, test_y = features[:600], labels[:600], features[600:], labels[600:]
    result = linear_probe(train_x, train_y, test_x, test_y, solver=solver, batchnorm=batchnorm, epochs=10)
    assert result["top1"] >= 98.0
    assert set(result["sweep"]) == set((0.001, 0.01, 0.1, 1.0, 10.0) if solver == "sgd" else (1e-6, 1e-4, 1e-2))
    assert ("lr" if solver == "sgd" else "l2") in result


def test_lbfgs_probe_matches_sklearn_logistic_regression():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(120, 6, generator=generator, dtype=torch.float64)
    labels = (features[:, :3] + 0.8 * torch.randn(120, 3, generator=generator, dtype=torch.float64)).argmax(dim=1)
    l2 = 0.05
    probe = train_lbfgs_probe(features, labels, num_classes=3, l2=l2)
    # sklearn minimises C * sum(CE) + ||W||^2 / 2, ours mean(CE) + l2 * ||W||^2 / 2: the same for C = 1 / (N l2)
    reference = LogisticRegression(C=1 / (120 * l2), tol=1e-10, max_iter=10000).fit(features.numpy(), labels.numpy())
    with torch.no_grad():
        ours = probe(features.float()).softmax(dim=1).double().numpy()
    np.testing.assert_allclose(ours, reference.predict_proba(features.numpy()), atol=1e-4)


def test_sgd_probe_is_seeded_and_checks_input():
    features, labels = _separable(64)
    first = train_sgd_probe(features, labels, 4, lr=0.1, epochs=2, seed=3)
    second = train_sgd_probe(features, labels, 4, lr=0.1, epochs=2, seed=3)
    assert torch.equal(first.linear.weight, second.linear.weight)
    with pytest.raises(ValueError, match="labels of shape"):
        train_sgd_probe(features, labels[:10], 4, lr=0.1)
    with pytest.raises(ValueError, match="solver"):
        linear_probe(features, labels, features, labels, solver="adam")


def test_few_shot_indices_pick_n_per_class_deterministically():
    labels = torch.tensor([0, 1, 2] * 20 + [3] * 4)
    for shots in (1, 4):
        rows = few_shot_indices(labels, shots, seed=7)
        assert torch.bincount(labels[rows]).tolist() == [shots] * 4
        assert rows.unique().numel() == rows.numel()
        assert torch.equal(rows, few_shot_indices(labels, shots, seed=7))
    assert not torch.equal(few_shot_indices(labels, 4, seed=0), few_shot_indices(labels, 4, seed=1))
    with pytest.raises(ValueError, match="class 3 has 4 images"):
        few_shot_indices(labels, 5, seed=0)


def test_few_shot_on_clustered_features():
    generator = torch.Generator().manual_seed(0)
    centres = 5 * torch.randn(3, 8, generator=generator)
    train_y, test_y = torch.arange(60) % 3, torch.arange(30) % 3
    train_x = centres[train_y] + torch.randn(60, 8, generator=generator)
    test_x = centres[test_y] + torch.randn(30, 8, generator=generator)
    results = few_shot(train_x, train_y, test_x, test_y, shots=(1, 5), seeds=(0, 1))
    assert set(results) == {"1-shot", "5-shot"}
    for scores in results.values():
        assert scores["knn"]["runs"] == 2 and scores["knn"]["mean"] > 90.0 and scores["linear"]["mean"] > 90.0


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    backbone = SSLViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            num_channels=1)  # fmt: skip
    torch.manual_seed(0)
    model = DinoModel(DinoConfig(backbone_config=backbone.to_dict()))
    directory = tmp_path_factory.mktemp("model")
    model.save_pretrained(directory)
    processor_for(model.config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_arrays(tmp_path_factory):
    """A saved array dataset (like the builtin Fashion-MNIST): 20 train / 10 test 14x14 images, 2 classes."""
    rng = np.random.default_rng(0)

    def split(count):
        labels = np.arange(count) % 2
        images = (rng.integers(0, 100, (count, 14, 14)) + 150 * labels[:, None, None]).astype(np.uint8)
        return array_dataset(images, labels, ["dark", "light"])

    directory = tmp_path_factory.mktemp("arrays") / "data"
    datasets.DatasetDict({"train": split(20), "test": split(10)}).save_to_disk(str(directory))
    return str(directory)


def test_array_pixel_values_follow_the_processor(tiny_model_dir):
    processor = processor_for(DinoConfig.from_pretrained(tiny_model_dir))
    ramp = torch.linspace(0, 1, 16)
    images = torch.stack([255 * ramp.outer(ramp), 255 * (1 - ramp).outer(ramp.flip(0))]).round().to(torch.uint8)

    expected = processor([Image.fromarray(image.numpy()) for image in images], return_tensors="pt")["pixel_values"]
    ours = array_pixel_values(images, processor, num_channels=1)
    assert ours.shape == expected.shape == (2, 1, 16, 16)
    # resize 16 -> 18 then crop 16: bicubic implementations differ slightly (torch vs torchvision/PIL)
    assert (ours - expected).abs().max() < 0.05


def test_features_cache_round_trip(tiny_model_dir, tiny_arrays, tmp_path):
    cache = tmp_path / "cache"
    first = model_split_features(str(tiny_model_dir), tiny_arrays, {"train": None, "test": 6}, cache_dir=cache)
    files = sorted(cache.glob("*.safetensors"))
    assert len(files) == 2
    assert first["test"][0].shape == (6, 32) and first["train"][1].tolist() == [0, 1] * 10
    again = model_split_features(str(tiny_model_dir), tiny_arrays, {"train": None, "test": 6}, cache_dir=cache)
    for split in ("train", "test"):
        assert torch.equal(first[split][0], again[split][0]) and torch.equal(first[split][1], again[split][1])
    stored = [load_file(str(path)) for path in files]
    assert sorted(tuple(s["features"].shape) for s in stored) == [(6, 32), (20, 32)]
    # a different limit or random init is another cache entry
    model_split_features(str(tiny_model_dir), tiny_arrays, {"test": 6}, random_init=True, cache_dir=cache)
    assert len(list(cache.glob("*.safetensors"))) == 3


def test_eval_commands_on_a_saved_model(tiny_model_dir, tiny_arrays, tmp_path, capsys):
    common = ["--model", str(tiny_model_dir), "--dataset", tiny_arrays, "--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "knn.json"
    assert main(["eval", "knn", *common, "--k", "1", "3", "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())) == {"k=1", "k=3"}
    out = tmp_path / "linear.json"
    assert main(["eval", "linear", *common, "--solver", "lbfgs", "--out", str(out)]) == 0
    linear = json.loads(out.read_text())
    assert set(linear) == {"linear", "linear+bn"} and linear["linear+bn"]["top1"] > 80.0  # brightness is linear
    out = tmp_path / "fewshot.json"
    assert main(["eval", "fewshot", *common, "--shots", "1", "2", "--seeds", "0", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["2-shot"]["linear"]["runs"] == 2
    out = tmp_path / "rankme.json"
    assert main(["eval", "rankme", *common, "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert 1.0 <= metrics["rankme"] <= metrics["max_rank"] == 10
    printed = capsys.readouterr().out
    for text in ("kNN k=3", "linear+bn: top-1", "2-shot: kNN", "RankMe", "alpha-ReQ", "embedding std"):
        assert text in printed
