"""`Trainer` fine-tuning of hf_ssl and plain transformers checkpoints, and the layer-wise learning-rate decay groups."""

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, Dinov2Config, Dinov2Model

from hf_ssl import DinoConfig, DinoModel, SSLViTConfig, processor_for
from hf_ssl.cli import main
from hf_ssl.evaluation.finetune import build_trainer, layerwise_param_groups


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """16 random 32 px RGB images per split, 2 classes told apart by brightness, saved with `save_to_disk`."""
    rng = np.random.default_rng(0)

    def split(count):
        labels = [index % 2 for index in range(count)]
        images = [
            Image.fromarray(rng.integers(0, 128, (32, 32, 3), dtype=np.uint8) + 127 * label) for label in labels
        ]
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["dark", "light"])})
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)

    directory = tmp_path_factory.mktemp("data") / "tiny"
    datasets.DatasetDict({"train": split(16), "test": split(8)}).save_to_disk(str(directory))
    return str(directory)


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    backbone = SSLViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    torch.manual_seed(0)
    model = DinoModel(DinoConfig(backbone_config=backbone.to_dict()))
    directory = tmp_path_factory.mktemp("dino")
    model.save_pretrained(directory)
    processor_for(model.config).save_pretrained(directory)
    return directory


def test_finetune_lowers_loss_and_reloads_identically(dino_dir, tiny_dataset, tmp_path):
    out = tmp_path / "finetuned"
    trainer = build_trainer(
        str(dino_dir), tiny_dataset, out, max_steps=12, batch_size=8, lr=1e-3, logging_steps=1, augment=False,
        layer_decay=0.75,
    )  # fmt: skip
    trainer.train()
    trainer.save_model(str(out))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3])

    reloaded = AutoModelForImageClassification.from_pretrained(out).eval()
    assert type(reloaded).__name__ == "DinoForImageClassification"
    assert reloaded.config.id2label == {0: "dark", 1: "light"}
    pixel_values = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = trainer.model.eval().cpu()(pixel_values).logits
        torch.testing.assert_close(reloaded(pixel_values).logits, expected, rtol=0, atol=0)
    # the saved weights are the fine-tuned ones, not the pretrained encoder with a fresh head
    pretrained = AutoModelForImageClassification.from_pretrained(dino_dir, num_labels=2)
    assert not torch.equal(pretrained.dino.backbone.layers[0].attn.qkv.weight, reloaded.dino.backbone.layers[0].attn.qkv.weight)
    assert (out / "preprocessor_config.json").is_file()


def test_finetune_cli_on_a_transformers_dinov2(tiny_dataset, tmp_path):
    config = Dinov2Config(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64)  # fmt: skip
    torch.manual_seed(0)
    Dinov2Model(config).save_pretrained(tmp_path / "dinov2")
    out, report = tmp_path / "finetuned", tmp_path / "results.json"
    code = main([
        "eval", "finetune", "--model", str(tmp_path / "dinov2"), "--dataset", tiny_dataset, "--output-dir", str(out),
        "--max-steps", "2", "--batch-size", "8", "--out", str(report),
    ])  # fmt: skip
    assert code == 0
    results = json.loads(report.read_text())
    assert results["train"]["train_loss"] > 0
    reloaded = AutoModelForImageClassification.from_pretrained(out)
    assert type(reloaded).__name__ == "Dinov2ForImageClassification" and reloaded.config.num_labels == 2


def test_layerwise_param_groups_scale_by_depth():
    config = DinoConfig(backbone_config=SSLViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3,
                                                     num_attention_heads=2).to_dict(), num_labels=4)  # fmt: skip
    model = AutoModelForImageClassification.from_config(config)
    groups = layerwise_param_groups(model, lr=1.0, weight_decay=0.1, layer_decay=0.5)
    by_name = {id(p): g for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert sum(len(g["params"]) for g in groups) == len(params)
    # 3 blocks: embeddings 0.5^4, block i 0.5^(3 - i), head 1
    assert by_name[id(params["dino.backbone.embeddings.cls_token"])]["lr"] == 0.5**4
    assert by_name[id(params["dino.backbone.layers.0.attn.qkv.weight"])]["lr"] == 0.5**3
    assert by_name[id(params["dino.backbone.layers.2.mlp.fc1.weight"])]["lr"] == 0.5
    assert by_name[id(params["classifier.weight"])]["lr"] == 1.0
    assert by_name[id(params["classifier.weight"])]["weight_decay"] == 0.1
    assert by_name[id(params["classifier.bias"])]["weight_decay"] == 0.0
    assert by_name[id(params["dino.backbone.embeddings.cls_token"])]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="layer_decay"):
        layerwise_param_groups(model, 1.0, layer_decay=0.0)
    with pytest.raises(ValueError, match="numbered transformer blocks"):
        layerwise_param_groups(torch.nn.Linear(2, 2), 1.0)
