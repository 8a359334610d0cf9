"""`hf-ssl push` / `push_to_hub`: which files and which model card would be committed. The Hub API's network layer
(`HfApi.create_repo`, `HfApi.create_commit`) is replaced by recorders; nothing touches the network."""

import json
from functools import partial

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from hf_ssl import DinoConfig, DinoModel, SSLViTConfig
from hf_ssl.cli import main
from hf_ssl.convert.hub import CARD_MARKER, push_to_hub


@pytest.fixture
def hub(monkeypatch):
    """Records what would be sent to the Hub: the created repos and each commit's files (path -> bytes)."""
    calls = {"repos": [], "commits": []}

    def create_repo(self, repo_id, **kwargs):
        calls["repos"].append((repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, **kwargs):
        files = {}
        for operation in operations:
            source = operation.path_or_fileobj
            files[operation.path_in_repo] = source if isinstance(source, bytes) else open(source, "rb").read()
        calls["commits"].append(dict(repo_id=repo_id, files=files, **kwargs))
        return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return calls


def card_of(commit) -> ModelCard:
    return ModelCard(commit["files"]["README.md"].decode())


@pytest.fixture
def converted_dino(tmp_path):
    """A DINO checkpoint converted with `hf-ssl convert` (timm weights in DINO's layout)."""
    torch.manual_seed(0)
    reference = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=0,
                                  norm_layer=partial(nn.LayerNorm, eps=1e-6))
    torch.save(reference.state_dict(), tmp_path / "dino_deitsmall16_pretrain.pth")
    out = tmp_path / "dino-tiny"
    assert main(["convert", "dino", "--checkpoint", str(tmp_path / "dino_deitsmall16_pretrain.pth"), "--out", str(out),
                 "--num-heads", "2"]) == 0
    return out


def test_push_converted_model_commits_weights_config_processor_and_card(converted_dino, hub):
    url = push_to_hub(converted_dino, "org/dino-tiny", private=True)
    assert url == "https://huggingface.co/org/dino-tiny/commit/0"
    assert hub["repos"] == [("org/dino-tiny", {"private": True, "exist_ok": True, "repo_type": "model"})]
    (commit,) = hub["commits"]
    assert commit["repo_id"] == "org/dino-tiny"
    assert set(commit["files"]) == {"config.json", "model.safetensors", "preprocessor_config.json", "conversion.json",
                                    "README.md"}
    assert commit["files"]["model.safetensors"] == (converted_dino / "model.safetensors").read_bytes()

    card = card_of(commit)
    metadata = card.data.to_dict()
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "image-feature-extraction"
    assert metadata["license"] == "apache-2.0"  # the original DINO weights' license
    assert metadata["datasets"] == ["ILSVRC/imagenet-1k"]
    assert {"self-supervised", "hf-ssl", "dino"} <= set(metadata["tags"])
    assert 'AutoModel.from_pretrained("org/dino-tiny")' in card.text
    assert 'pipeline("image-feature-extraction", model="org/dino-tiny", pool=True)' in card.text
    assert "hf-ssl export --to transformers" in card.text
    assert "dino_deitsmall16_pretrain.pth" in card.text and "SHA-256" in card.text
    assert CARD_MARKER in card.text
    assert not (converted_dino / "README.md").exists()  # the folder itself is left as it was


def test_push_pretrained_run_with_recipe_and_eval_results(tmp_path, hub):
    """The engine writes the model to <run>/model and recipe.yaml to <run>; eval results sit beside the model.
    Hidden files and training checkpoints are not uploaded; a missing processor config is generated."""
    backbone = SSLViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    model_dir = tmp_path / "run" / "model"
    DinoModel(DinoConfig(backbone_config=backbone)).save_pretrained(model_dir)
    recipe = {"model": {"model_type": "dino"}, "data": {"dataset": "fashion_mnist"}, "train": {"epochs": 3}}
    (tmp_path / "run" / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (model_dir / "eval_results.json").write_text(json.dumps({"k=20": {"top1": 71.5, "top5": 96.25}}))
    (model_dir / ".cache").mkdir()
    (model_dir / ".cache" / "lock").write_text("x")
    (model_dir / "checkpoints").mkdir()
    (model_dir / "checkpoints" / "optimizer.pt").write_text("x")

    assert main(["push", str(model_dir), "me/dino-fmnist", "--license", "mit"]) == 0
    (commit,) = hub["commits"]
    assert set(commit["files"]) == {"config.json", "model.safetensors", "eval_results.json",
                                    "preprocessor_config.json", "README.md"}
    processor = json.loads(commit["files"]["preprocessor_config.json"])
    assert processor["crop_size"] == {"height": 32, "width": 32}

    card = card_of(commit)
    metadata = card.data.to_dict()
    assert metadata["license"] == "mit"
    assert metadata["datasets"] == ["zalando-datasets/fashion_mnist"]
    assert "dino" in metadata["tags"]
    assert "## Pretraining recipe" in card.text and "epochs: 3" in card.text
    assert "| k=20 | top1 | 71.5 |" in card.text and "| k=20 | top5 | 96.25 |" in card.text


def test_user_written_readme_is_kept_and_a_generated_one_is_refreshed(converted_dino, hub):
    (converted_dino / "README.md").write_text("# my own card\n")
    push_to_hub(converted_dino, "org/a")
    assert hub["commits"][-1]["files"]["README.md"] == b"# my own card\n"

    (converted_dino / "README.md").write_text(f"{CARD_MARKER}\nstale\n")
    push_to_hub(converted_dino, "org/b")
    assert b"stale" not in hub["commits"][-1]["files"]["README.md"]
    assert b'AutoModel.from_pretrained("org/b")' in hub["commits"][-1]["files"]["README.md"]


def test_convert_with_push(tmp_path, hub):
    torch.manual_seed(0)
    reference = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=0,
                                  norm_layer=partial(nn.LayerNorm, eps=1e-6))
    torch.save({"model": reference.state_dict()}, tmp_path / "mae_pretrain_vit_base.pth")
    out = tmp_path / "mae"
    assert main(["convert", "mae", "--checkpoint", str(tmp_path / "mae_pretrain_vit_base.pth"), "--out", str(out),
                 "--num-heads", "2", "--push", "org/mae-tiny"]) == 0
    (commit,) = hub["commits"]
    metadata = card_of(commit).data.to_dict()
    assert metadata["license"] == "cc-by-nc-4.0" and "mae" in metadata["tags"]
    assert "mean of the patch tokens" in card_of(commit).text


def test_bad_folder_or_repo_id(tmp_path, converted_dino, hub, capsys):
    with pytest.raises(ValueError, match="no config.json"):
        push_to_hub(tmp_path / "missing", "org/x")
    (converted_dino / "model.safetensors").rename(converted_dino / "weights.bin")
    with pytest.raises(ValueError, match="no model.safetensors"):
        push_to_hub(converted_dino, "org/x")
    (converted_dino / "weights.bin").rename(converted_dino / "model.safetensors")
    assert main(["push", str(converted_dino), "not-a-repo-id"]) == 2
    assert "org/name" in capsys.readouterr().err
    assert hub["repos"] == [] and hub["commits"] == []
