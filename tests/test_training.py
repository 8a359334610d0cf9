"""The engine: recipes and overrides, a few real training steps, exact resume, atomic checkpoints, the non-finite
guard, and the saved model folders. A tiny pretraining model defined here stands in for a method; DINO runs too."""

import json
import math
import os

import numpy as np
import pytest
import yaml
import torch
import torch.nn.functional as F
from datasets import Dataset, Features, Image
from PIL import Image as PILImage
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

import hf_ssl  # noqa: F401
from hf_ssl.modeling.base import SSLPreTrainingOutput
from hf_ssl.training import NonFiniteError, Recipe, latest_checkpoint, load_recipe, train
from hf_ssl.training.checkpoint import checkpoint_dirs
from hf_ssl.training.monitors import collapse_metrics, embedding_std, rankme
from hf_ssl.training.engine import RunBatchSampler, SeededBatches
from hf_ssl.training.recipe import apply_overrides, packaged_recipes, resolve_recipe_path


class TinySSLConfig(PreTrainedConfig):
    model_type = "tiny_ssl_test"

    hidden_size: int = 16
    image_size: int = 16
    num_channels: int = 3
    dropout: float = 0.2
    momentum: float = 0.9
    nonfinite_at_call: int = -1  # the forward call (1-based) that makes the loss or the gradients non-finite
    nonfinite_kind: str = "loss"
    crash_at_step: int = -1  # raise in on_step_end at this progress.step (simulates a killed run)


class TinyEncoder(PreTrainedModel):
    config_class = TinySSLConfig
    base_model_prefix = "encoder"
    main_input_name = "pixel_values"

    def __init__(self, config):
        super().__init__(config)
        self.patch = nn.Conv2d(config.num_channels, config.hidden_size, 4, 4)
        self.norm = nn.LayerNorm(config.hidden_size)
        self.post_init()

    def forward(self, pixel_values, **kwargs):
        tokens = self.patch(pixel_values).flatten(2).transpose(1, 2)
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=self.norm(tokens.mean(1)))


class SimulatedCrash(RuntimeError):
    pass


class TinyForPreTraining(PreTrainedModel):
    """Two views -> encoder -> dropout -> head; loss = 1 - cos(z1, z2) + a std hinge; an EMA copy of the head
    updated in `on_step_end` and a step counter buffer stand for a method's teacher and state."""

    config_class = TinySSLConfig
    base_model_prefix = "encoder"
    hook_calls: list = []

    def __init__(self, config):
        super().__init__(config)
        self.encoder = TinyEncoder(config)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.hidden_size)
        self.ema_head = nn.Linear(config.hidden_size, config.hidden_size)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.post_init()
        self.ema_head.load_state_dict(self.head.state_dict())
        self.ema_head.requires_grad_(False)
        self.calls = 0

    def forward(self, global_views, local_views=None, **kwargs):
        self.calls += 1
        views = global_views.flatten(0, 1)
        z = self.head(self.dropout(self.encoder(views).pooler_output))
        z1, z2 = z.chunk(2)
        cos = F.cosine_similarity(z1, z2).mean()
        loss = 1 - cos + F.relu(1 - z.std(0)).mean()
        if self.calls == self.config.nonfinite_at_call:
            if self.config.nonfinite_kind == "loss":
                loss = loss * float("nan")
            else:  # finite loss, NaN gradients: d/dw of the unselected sqrt(-x) branch is 0 * NaN
                loss = loss + torch.where(torch.tensor(True), 0.0, torch.sqrt(-self.head.weight.abs().sum()))
        return SSLPreTrainingOutput(loss=loss, logs={"cos": cos.detach()}, embeddings=z1)

    def on_before_optimizer_step(self, progress):
        self.hook_calls.append(("before", progress.step, progress.total_steps, progress.steps_per_epoch))

    @torch.no_grad()
    def on_step_end(self, progress):
        self.hook_calls.append(("end", progress.step, progress.total_steps, progress.steps_per_epoch))
        if progress.step == self.config.crash_at_step:
            raise SimulatedCrash(f"killed at step {progress.step}")
        for ema, online in zip(self.ema_head.parameters(), self.head.parameters()):
            ema.mul_(self.config.momentum).add_(online, alpha=1 - self.config.momentum)
        self.num_updates += 1


AutoConfig.register(TinySSLConfig.model_type, TinySSLConfig, exist_ok=True)
AutoModel.register(TinySSLConfig, TinyEncoder, exist_ok=True)
AutoModelForPreTraining.register(TinySSLConfig, TinyForPreTraining, exist_ok=True)


@pytest.fixture(scope="module")
def image_dataset(tmp_path_factory):
    """A saved `datasets` folder of 32 random 16 px PNG images."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    images = [PILImage.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(32)]
    Dataset.from_dict({"image": images}, features=Features({"image": Image()})).save_to_disk(str(folder / "data"))
    return str(folder / "data")


def tiny_recipe(output_dir, dataset, model=None, **train_options) -> Recipe:
    train_section = {
        "batch_size": 8, "max_steps": 6, "output_dir": str(output_dir), "checkpoint_every": 3, "keep_last": 5,
        "log_every": 1, "monitor_every": 2, "log_with": "none", "progress_bar": False, "seed": 0,
    }  # fmt: skip
    train_section.update(train_options)
    return Recipe.from_dict(
        {
            "model": {"model_type": "tiny_ssl_test", **(model or {})},
            "views": {"type": "two_view", "size": 16, "scale": [0.5, 1.0]},
            "data": {"dataset": dataset, "num_workers": 0},
            "optim": {"optimizer": "adamw", "lr": 5e-3, "base_batch_size": 8, "warmup_steps": 1, "min_lr": 1e-3,
                      "weight_decay": 0.01, "clip_grad": 1.0},  # fmt: skip
            "train": train_section,
        }
    )


def _weights(run_dir):
    return load_file(str(run_dir / "pretraining" / "model.safetensors"))


# --- recipes -------------------------------------------------------------------------------------------------------


def test_overrides_are_parsed_as_yaml_and_applied():
    values = apply_overrides(
        {"optim": {"lr": 1.0}}, ["optim.lr=1e-3", "train.max_steps=10", "optim.betas=[0.9, 0.95]", "model.x.y=null"]
    )
    assert values == {
        "optim": {"lr": 1e-3, "betas": [0.9, 0.95]}, "train": {"max_steps": 10}, "model": {"x": {"y": None}}
    }
    with pytest.raises(ValueError, match="section.key=value"):
        apply_overrides({}, ["optim.lr"])


def test_packaged_recipes_load_by_name_with_overrides():
    assert {"dino_vits16", "simclr_resnet50", "dino_tiny_fmnist", "simclr_tiny_fmnist"} <= set(packaged_recipes())
    recipe = load_recipe("dino_tiny_fmnist", ["optim.lr=1e-3", "train.max_steps=10"])
    assert recipe.optim.lr == 1e-3 and recipe.train.max_steps == 10
    assert resolve_recipe_path("dino_vits16.yaml").name == "dino_vits16.yaml"
    for name in packaged_recipes():
        load_recipe(name).build_config()  # every packaged recipe validates and builds its config
    with pytest.raises(FileNotFoundError, match="packaged recipes: .*dino_vits16"):
        resolve_recipe_path("no_such_recipe")


@pytest.mark.parametrize(
    "override, error, message",
    [
        ("optim.lr=0", ValueError, r"optim.lr must be > 0, got 0"),
        ("optim.lr=-1e-3", ValueError, r"optim.lr must be > 0"),
        ("train.batch_size=0", ValueError, r"train.batch_size must be >= 1"),
        ("optim.lrr=1", ValueError, r"unknown field optim.lrr; known fields: .*\blr\b"),
        ("trainer.epochs=1", ValueError, r"unknown recipe section\(s\) \['trainer'\]"),
        ("optim.optimizer=adam", ValueError, r"optim.optimizer must be one of \('adamw', 'sgd', 'lars'\)"),
        ("train.mixed_precision=fp8", ValueError, r"train.mixed_precision must be one of"),
        ("optim.layer_decay=1.5", ValueError, r"optim.layer_decay must be in \(0, 1\]"),
        ("train.batch_size=abc", TypeError, r"train.batch_size must be int, got 'abc'"),
        ("model.model_type=nope", ValueError, r"model.model_type 'nope' has no registered pretraining model; "
                                              r"registered: .*'dino'.*'simclr'"),  # fmt: skip
    ],
)
def test_validation_names_the_field_and_range(override, error, message):
    with pytest.raises(error, match=message):
        load_recipe("dino_tiny_fmnist", [override])


def test_method_config_rejects_bad_values_before_training(tmp_path, image_dataset):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        load_recipe("simclr_tiny_fmnist", ["model.temperature=0"]).build_config()
    with pytest.raises(ValueError, match="global_batch_size=30 must be divisible"):
        train(tiny_recipe(tmp_path, image_dataset, global_batch_size=30, gradient_accumulation_steps=4))


def test_sampler_shards_processes_without_duplicates_and_resumes_mid_run():
    def batches(rank, start=0):
        sampler = RunBatchSampler(50, 4, batches_per_epoch=6, seed=1, start=start, end=12, num_processes=2,
                                  process_index=rank)  # fmt: skip
        return list(sampler)

    shards = [batches(0), batches(1)]
    for epoch in range(2):
        indices = [index for shard in shards for batch in shard[6 * epoch : 6 * epoch + 6] for _, index in batch]
        assert len(indices) == len(set(indices)) == 48
    assert [index for _, index in shards[0][0]] != [index for _, index in shards[0][6]]  # a new order each epoch
    seeds = [batch[0][0] for shard in shards for batch in shard]
    assert len(set(seeds)) == 24  # one augmentation seed per (epoch, batch, process)
    assert batches(1, start=8) == shards[1][8:]


def test_augmentations_do_not_depend_on_workers_or_on_where_the_run_starts(image_dataset):
    from hf_ssl.data.datasets import SSLDataset, load_dataset_for_pretraining
    from hf_ssl.processing.views import build_views, collate_views

    views = build_views(type="two_view", size=8)
    dataset = SeededBatches(SSLDataset(load_dataset_for_pretraining(image_dataset), views))

    def views(num_workers, start):
        sampler = RunBatchSampler(32, 8, batches_per_epoch=4, seed=3, start=start, end=6)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_views, num_workers=num_workers)
        return [batch["global_views"] for batch in loader]

    torch.manual_seed(0)
    in_process = views(0, start=0)
    torch.manual_seed(1)  # the caller's RNG plays no part
    in_workers = views(2, start=3)
    assert len(in_workers) == 3
    for expected, actual in zip(in_process[3:], in_workers):
        assert torch.equal(expected, actual)
    assert not torch.equal(in_process[0][0], in_process[0][1])  # the two views differ


def test_collapse_monitors_against_hand_computed_values(caplog):
    spread = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [0.0, -5.0]])  # normalised: +-e1, +-e2
    assert embedding_std(spread).item() == pytest.approx(math.sqrt(2 / 3))  # std of (1, 0, -1, 0)
    assert rankme(torch.eye(4)).item() == pytest.approx(4.0, rel=1e-4)  # 4 equal singular values
    collapsed = torch.ones(8, 16) + 1e-4 * torch.randn(8, 16)
    assert embedding_std(collapsed).item() < 1e-3
    assert rankme(torch.ones(8, 16)).item() == pytest.approx(1.0, rel=1e-4)
    with caplog.at_level("WARNING"):
        metrics = collapse_metrics(collapsed, step=7)
    assert "step 7: embedding std" in caplog.text and "step 7: RankMe" in caplog.text
    assert set(metrics) == {"monitor/embedding_std", "monitor/rankme"}


# --- training ------------------------------------------------------------------------------------------------------


def test_training_lowers_the_loss_and_saves_loadable_models(tmp_path, image_dataset):
    TinyForPreTraining.hook_calls.clear()
    result = train(tiny_recipe(tmp_path, image_dataset, max_steps=16, checkpoint_every=8, keep_last=1))
    losses = [entry["loss"] for entry in result["history"]]
    assert len(losses) == 16 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.05
    assert {"cos", "lr", "weight_decay", "images_per_second", "monitor/embedding_std", "monitor/rankme"} <= set(
        result["metrics"]
    )
    assert "monitor/rankme" in result["history"][1] and "monitor/rankme" not in result["history"][0]  # every 2 steps
    # lr: a 1-step warm-up from 0 (DINO's linspace), then the cosine from the scaled peak (5e-3 x 8/8) to min_lr
    assert result["history"][0]["lr"] == 0.0
    assert result["history"][1]["lr"] == pytest.approx(5e-3)
    assert result["history"][-1]["lr"] == pytest.approx(1e-3 + 4e-3 * (1 + np.cos(np.pi * 14 / 15)) / 2)
    assert result["history"][-1]["weight_decay"] == pytest.approx(0.01)
    # hooks: before/end once per step, with the step index and the run's length
    assert TinyForPreTraining.hook_calls[:2] == [("before", 0, 16, 4), ("end", 0, 16, 4)]
    assert len(TinyForPreTraining.hook_calls) == 32
    assert [path.name for path in checkpoint_dirs(tmp_path)] == ["checkpoint-16"]  # keep_last=1
    encoder = AutoModel.from_pretrained(result["model_dir"])
    assert isinstance(encoder, TinyEncoder)
    assert all(p.dtype == torch.float32 for p in encoder.parameters())
    assert (tmp_path / "model" / "preprocessor_config.json").is_file()
    assert (tmp_path / "pretraining" / "preprocessor_config.json").is_file()
    pretraining = AutoModelForPreTraining.from_pretrained(result["pretraining_dir"])
    assert int(pretraining.num_updates) == 16
    assert result["skipped_images"] == 0


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path, image_dataset):
    # 4 images x 2 accumulated micro-batches per step: 4 steps per epoch, so the run resumes mid-epoch 0 at step 3
    options = {"batch_size": 4, "gradient_accumulation_steps": 2}
    full = train(tiny_recipe(tmp_path / "full", image_dataset, **options))
    run_dir = tmp_path / "resumed"
    with pytest.raises(SimulatedCrash):
        train(tiny_recipe(run_dir, image_dataset, model={"crash_at_step": 4}, **options))
    assert [path.name for path in checkpoint_dirs(run_dir)] == ["checkpoint-3"]
    (run_dir / "checkpoint-5.tmp").mkdir()  # an interrupted save: ignored, then removed
    (run_dir / "checkpoint-5.tmp" / "model.safetensors").write_bytes(b"garbage")
    assert latest_checkpoint(run_dir).name == "checkpoint-3"
    TinyForPreTraining.hook_calls.clear()
    resumed = train(tiny_recipe(run_dir, image_dataset, **options), resume=True)
    assert not (run_dir / "checkpoint-5.tmp").exists()
    assert [call[1] for call in TinyForPreTraining.hook_calls if call[0] == "end"] == [3, 4, 5]
    assert TinyForPreTraining.hook_calls[0] == ("before", 3, 6, 4)
    assert resumed["step"] == full["step"] == 6
    expected, actual = _weights(tmp_path / "full"), _weights(run_dir)
    assert expected.keys() == actual.keys() and "ema_head.weight" in expected and "num_updates" in expected
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert int(actual["num_updates"]) == 6
    state = json.loads((run_dir / "checkpoint-6" / "engine_state.json").read_text())
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (6, 1, 4)  # micro-batches
    # the log holds each step once: the lines the crashed run wrote after checkpoint-3 were dropped on resume
    def logged_steps(folder):
        return [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]

    assert logged_steps(run_dir) == logged_steps(tmp_path / "full") == sorted(set(logged_steps(run_dir)))


@pytest.mark.parametrize("kind, message", [("loss", "non-finite loss at step 5"),
                                           ("grad", "non-finite gradient norm at step 5")])  # fmt: skip
def test_nonfinite_step_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, image_dataset, kind, message
):
    model = {"nonfinite_at_call": 5, "nonfinite_kind": kind}
    with pytest.raises(NonFiniteError, match=message):
        train(tiny_recipe(tmp_path, image_dataset, model=model, checkpoint_every=2))
    assert [path.name for path in checkpoint_dirs(tmp_path)] == ["checkpoint-2", "checkpoint-4"]
    weights = load_file(str(latest_checkpoint(tmp_path) / "model.safetensors"))
    assert all(torch.isfinite(tensor.float()).all() for tensor in weights.values())


def test_nonfinite_step_is_skipped_when_allowed(tmp_path, image_dataset):
    result = train(tiny_recipe(tmp_path, image_dataset, model={"nonfinite_at_call": 2}, allow_nonfinite_skip=True))
    assert result["skipped_nonfinite"] == 1 and result["step"] == 6
    weights = _weights(tmp_path)
    assert int(weights["num_updates"]) == 5
    assert all(torch.isfinite(tensor.float()).all() for tensor in weights.values())


def test_dino_trains_and_its_model_dir_loads_the_teacher(tmp_path, image_dataset):
    recipe = Recipe.from_dict(
        {
            "model": {"model_type": "dino", "head_out_dim": 64, "head_hidden_dim": 32, "head_bottleneck_dim": 16,
                      "backbone_config": {"model_type": "ssl_vit", "image_size": 16, "patch_size": 4, "hidden_size": 32,
                                          "num_hidden_layers": 2, "num_attention_heads": 2}},  # fmt: skip
            "views": {"type": "multi_crop", "global_crop_size": 16, "local_crop_size": 8, "num_local_crops": 2},
            "data": {"dataset": image_dataset, "num_workers": 0},
            "optim": {"lr": 1e-3, "base_batch_size": 8, "warmup_steps": 1, "layer_decay": 0.9},
            "train": {"batch_size": 8, "max_steps": 3, "output_dir": str(tmp_path), "checkpoint_every": 3,
                      "log_every": 1, "log_with": "none", "progress_bar": False},  # fmt: skip
        }
    )
    result = train(recipe)
    assert np.isfinite(result["metrics"]["loss"])
    model = AutoModel.from_pretrained(result["model_dir"])
    assert type(model).__name__ == "DinoModel"
    teacher = load_file(str(tmp_path / "pretraining" / "model.safetensors"))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, teacher[f"dino.{name}"]), name
    processor = json.loads((tmp_path / "model" / "preprocessor_config.json").read_text())
    assert processor["crop_size"] == {"height": 16, "width": 16}
    assert (tmp_path / "pretraining" / "preprocessor_config.json").is_file()


def test_cli_pretrain_with_dataset_output_dir_overrides_and_resume(tmp_path, image_dataset, capsys):
    from hf_ssl.cli import main

    recipe = tiny_recipe("unused", "unused").to_dict()
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    args = ["pretrain", str(tmp_path / "tiny.yaml"), "--dataset", image_dataset, "--output-dir", str(out),
            "train.max_steps=2", "train.checkpoint_every=1", "optim.lr=1e-3"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 2 and summary["checkpoint"] == str(out / "checkpoint-2")
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["data"]["dataset"] == image_dataset and saved["optim"]["lr"] == 1e-3
    assert [path.name for path in checkpoint_dirs(out)] == ["checkpoint-1", "checkpoint-2"]
    (out / "checkpoint-2" / "engine_state.json").unlink()  # checkpoint-2 now counts as incomplete
    TinyForPreTraining.hook_calls.clear()
    args = ["pretrain", str(tmp_path / "tiny.yaml"), "--resume", "train.max_steps=2", "--dataset", image_dataset,
            "train.checkpoint_every=1", "--output-dir", str(out), "optim.lr=1e-3"]  # fmt: skip
    assert main(args) == 0
    assert [call[:2] for call in TinyForPreTraining.hook_calls] == [("before", 1), ("end", 1)]


@pytest.mark.parametrize("cores, workers, processes, expected", [(8, 2, 1, 6), (8, 2, 2, 2), (2, 2, 1, 1), (4, 0, 1, 4)])
def test_model_threads_leave_the_data_workers_their_cores(monkeypatch, cores, workers, processes, expected):
    from hf_ssl.training.engine import model_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert model_threads(workers, processes) == expected
