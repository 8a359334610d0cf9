"""Reliability of a pretraining run (issue 8): kill -9 and exact resume through the real CLI, a kill during a
checkpoint save, a folder of broken and unusual images, bad recipe values, the accelerate launch configs and FSDP.
See docs/reliability.md for the list of guarantees and the test of each."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import yaml
from datasets import Dataset, Features, Image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from safetensors.torch import load_file

import hf_ssl
from hf_ssl.data.images import load_image
from hf_ssl.training import latest_checkpoint, load_recipe, train
from hf_ssl.training.checkpoint import checkpoint_dirs
from hf_ssl.training.recipe import Recipe

ACCELERATE_CONFIGS = Path(hf_ssl.__file__).parent / "recipes" / "accelerate"
CLI = "import sys; from hf_ssl.cli import main; sys.exit(main())"  # what the `hf-ssl` console script runs
# Fires inside `save_checkpoint` after every file of checkpoint-<SLOW_SAVE_STEP>.tmp is written, before the rename.
SLOW_SAVE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import hf_ssl.training.checkpoint as checkpoint
    fsync_files = checkpoint._fsync_files
    def slow_fsync(folder):
        if folder.name == "checkpoint-{step}.tmp":
            Path("{marker}").touch()
            time.sleep(600)
        fsync_files(folder)
    checkpoint._fsync_files = slow_fsync
""")
TOTAL_STEPS, CHECKPOINT_EVERY = 40, 5


def tiny_recipe_values(dataset: str, output_dir: str = "unused", **train_options) -> dict:
    """SimCLR with a 1-block, 32-wide ViT on 16 px images: a few milliseconds a step."""
    train_section = {
        "batch_size": 8, "max_steps": TOTAL_STEPS, "output_dir": output_dir, "checkpoint_every": CHECKPOINT_EVERY,
        "keep_last": 20, "log_every": 5, "monitor_every": 10, "log_with": "none", "progress_bar": False, "seed": 0,
    }  # fmt: skip
    train_section.update(train_options)
    return {
        "model": {"model_type": "simclr", "projection_hidden_dim": 32, "projection_dim": 16,
                  "backbone_config": {"model_type": "ssl_vit", "image_size": 16, "patch_size": 8, "hidden_size": 32,
                                      "num_hidden_layers": 1, "num_attention_heads": 2, "drop_path_rate": 0.1}},
        "views": {"type": "two_view", "size": 16, "scale": [0.5, 1.0]},
        "data": {"dataset": dataset, "num_workers": 0},
        "optim": {"optimizer": "adamw", "lr": 1e-3, "base_batch_size": 8, "warmup_steps": 2, "weight_decay": 0.01},
        "train": train_section,
    }  # fmt: skip


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory):
    """A saved `datasets` folder of 32 random 16 px PNG images (4 steps of 8 per epoch)."""
    folder = tmp_path_factory.mktemp("images") / "data"
    rng = np.random.default_rng(0)
    images = [PILImage.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(32)]
    Dataset.from_dict({"image": images}, features=Features({"image": Image()})).save_to_disk(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory, saved_dataset):
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_values(saved_dataset)))
    return path


def pretrain_command(recipe_file, output_dir, *extra, prelude: str = "") -> list[str]:
    return [sys.executable, "-c", prelude + CLI, "pretrain", str(recipe_file), "--output-dir", str(output_dir), *extra]


def subprocess_env() -> dict:
    # one thread: the same arithmetic in every run, and no contention with the test process
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def pretrain_in_process(recipe_file, output_dir, *extra) -> None:
    """`hf-ssl pretrain` in this process, on one thread like the subprocesses (the same arithmetic, bit for bit)."""
    from hf_ssl.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["pretrain", str(recipe_file), "--output-dir", str(output_dir), *extra]) == 0
    finally:
        torch.set_num_threads(threads)


def kill_when(command, ready, timeout: float = 90.0) -> subprocess.Popen:
    """Start `command`, SIGKILL it as soon as `ready()` is true (polled every 2 ms), and return the dead process."""
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"the run ended (rc {process.returncode}) before it could be killed: "
                            f"{process.stderr.read().decode()[-2000:]}")  # fmt: skip
            if time.monotonic() > deadline:
                pytest.fail("the run did not reach the kill point in time")
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    return process


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, recipe_file):
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    pretrain_in_process(recipe_file, output_dir)
    return output_dir


def assert_same_weights(expected_dir: Path, actual_dir: Path) -> None:
    expected = load_file(str(expected_dir / "pretraining" / "model.safetensors"))
    actual = load_file(str(actual_dir / "pretraining" / "model.safetensors"))
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


# --- exact resume after kill -9 ------------------------------------------------------------------------------------


def test_kill_9_mid_run_then_resume_equals_the_uninterrupted_run_bit_for_bit(tmp_path, recipe_file, uninterrupted):
    run_dir = tmp_path / "run"
    kill_when(pretrain_command(recipe_file, run_dir), lambda: (run_dir / "checkpoint-10").is_dir())
    assert not (run_dir / "pretraining").exists()  # killed before the end
    resumed_from = latest_checkpoint(run_dir)
    assert resumed_from is not None and int(resumed_from.name.split("-")[1]) < TOTAL_STEPS
    pretrain_in_process(recipe_file, run_dir, "--resume")
    assert_same_weights(uninterrupted, run_dir)
    state = json.loads((run_dir / f"checkpoint-{TOTAL_STEPS}" / "engine_state.json").read_text())
    assert state["step"] == TOTAL_STEPS


def test_kill_during_a_checkpoint_save_leaves_the_previous_checkpoint_intact(tmp_path, recipe_file, uninterrupted):
    run_dir, marker = tmp_path / "run", tmp_path / "saving"
    prelude = SLOW_SAVE.format(step=10, marker=marker)
    kill_when(pretrain_command(recipe_file, run_dir, prelude=prelude), marker.exists)
    # checkpoint-10 was fully written to its .tmp folder but never published
    assert (run_dir / "checkpoint-10.tmp" / "model.safetensors").is_file()
    assert [path.name for path in checkpoint_dirs(run_dir)] == ["checkpoint-5"]
    previous = load_file(str(run_dir / "checkpoint-5" / "model.safetensors"))
    reference = load_file(str(uninterrupted / "checkpoint-5" / "model.safetensors"))
    assert all(torch.equal(previous[name], reference[name]) for name in reference)
    pretrain_in_process(recipe_file, run_dir, "--resume")
    assert not (run_dir / "checkpoint-10.tmp").exists()  # removed on resume
    assert_same_weights(uninterrupted, run_dir)


# --- bad data ------------------------------------------------------------------------------------------------------

BOMB_LIMIT = 64 * 64  # PIL.Image.MAX_IMAGE_PIXELS for these tests: the 200 x 200 image is "very large"


def write_mixed_folder(folder: Path) -> tuple[list[str], list[str]]:
    """Valid images of every awkward kind plus undecodable files; returns (valid names, bad names)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def rgb(size=(20, 24)):
        return PILImage.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))

    for index in range(4):
        rgb().save(folder / f"rgb_{index}.png")
    rgb().convert("L").save(folder / "gray.png")
    rgb().convert("RGBA").save(folder / "rgba.png")
    rgb().convert("CMYK").save(folder / "cmyk.jpg")
    PILImage.fromarray(rng.integers(0, 65536, (20, 20), dtype=np.uint16)).save(folder / "sixteen_bit.png")
    assert PILImage.open(folder / "sixteen_bit.png").mode.startswith("I")
    rgb().convert("P").save(folder / "palette.png")
    frames = [rgb((16, 16)) for _ in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=50)
    rgb((1, 1)).save(folder / "one_pixel.png")
    rgb((20, 20)).save(folder / "tiny_jpeg.jpg")
    valid = sorted(path.name for path in folder.iterdir())

    (folder / "zero_bytes.png").write_bytes(b"")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 200, dtype=np.uint8)))
    encoded = (folder / "rgb_0.png").read_bytes()
    (folder / "truncated.png").write_bytes(encoded[: len(encoded) // 2])
    rgb((200, 200)).save(folder / "very_large.png")
    bad = ["corrupt.png", "truncated.png", "very_large.png", "zero_bytes.png"]
    return valid, bad


@pytest.fixture
def bomb_limit(monkeypatch):
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", BOMB_LIMIT)


def test_pretraining_on_a_mixed_folder_skips_and_counts_the_undecodable_images(tmp_path, bomb_limit, caplog):
    valid, bad = write_mixed_folder(tmp_path / "images")
    for name in bad:
        with pytest.raises(ValueError, match=name):
            load_image(tmp_path / "images" / name)
    for name in valid:
        assert load_image(tmp_path / "images" / name).mode == "RGB"
    # 16 files, 2 steps of 8: one epoch sees every file exactly once
    assert len(valid) + len(bad) == 16
    values = tiny_recipe_values(str(tmp_path / "images"), str(tmp_path / "run"), max_steps=2, log_every=1)
    with caplog.at_level("WARNING"):
        result = train(Recipe.from_dict(values))
    assert result["step"] == 2 and np.isfinite(result["metrics"]["loss"])
    assert result["skipped_images"] == len(bad)
    assert "4 undecodable images were skipped" in caplog.text
    assert "refused as a possible decompression bomb" in caplog.text
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "engine_state.json").read_text())
    assert state["skipped_images"] == len(bad)

    from hf_ssl.cli import main
    from safetensors import safe_open

    out = tmp_path / "features.safetensors"
    argv = ["extract", "--model", result["model_dir"], "--images", str(tmp_path / "images"), "--out", str(out)]
    assert main(argv) == 1  # without --skip-errors the first unreadable file stops it, named
    assert main([*argv, "--skip-errors"]) == 0
    with safe_open(str(out), "pt") as file:
        metadata = file.metadata()
        assert file.get_tensor("features").shape == (len(valid), 32)
    assert json.loads(metadata["paths"]) == valid
    assert sorted(json.loads(metadata["skipped"])) == bad


IMAGE_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"]


def random_image(mode: str, width: int, height: int, seed: int) -> PILImage.Image:
    rng = np.random.default_rng(seed)
    rgb = PILImage.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "I;16":
        return PILImage.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "F":
        return PILImage.fromarray(rng.normal(size=(height, width)).astype(np.float32))
    return rgb.convert(mode)


image_strategy = st.builds(
    random_image, st.sampled_from(IMAGE_MODES), st.integers(1, 48), st.integers(1, 48), st.integers(0, 2**16)
)


def _views():
    from hf_ssl.processing.views import build_views

    return build_views(type="multi_crop", global_crop_size=16, local_crop_size=8, num_local_crops=2)


def _processor():
    from hf_ssl import SSLViTConfig, processor_for

    return processor_for(SSLViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2))  # fmt: skip


VIEWS, PROCESSOR = _views(), _processor()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=image_strategy)
def test_any_mode_and_size_decodes_to_rgb_and_gives_fixed_view_shapes(image):
    rgb = load_image(image)
    assert rgb.mode == "RGB" and rgb.size == image.size
    views = VIEWS(rgb)
    assert [tuple(view.shape) for view in views["global_views"]] == [(3, 16, 16)] * 2
    assert [tuple(view.shape) for view in views["local_views"]] == [(3, 8, 8)] * 2
    assert all(torch.isfinite(view).all() for view in views["global_views"] + views["local_views"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=image_strategy)
def test_the_inference_processor_takes_any_mode_and_size(image):
    pixel_values = PROCESSOR(images=image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 32, 32) and torch.isfinite(pixel_values).all()


# --- bad configs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "recipe, override, message",
    [
        ("simclr_tiny_fmnist", "optim.lr=-1e-3", r"optim.lr must be > 0, got -0.001"),
        ("mae_tiny_fmnist", "model.mask_ratio=1.0", r"model: mask_ratio must be in \[0, 1\).*got 1.0"),
        ("mae_tiny_fmnist", "model.mask_ratio=-0.1", r"model: mask_ratio must be in \[0, 1\)"),
        ("simmim_tiny_fmnist", "model.mask_ratio=0", r"model: mask_ratio must be in \(0, 1\), got 0"),
        ("ibot_tiny_fmnist", "views.masking.mask_ratio=[0.1, 1.5]", r"views: mask_ratio must be an increasing pair "
                                                                     r"inside \[0.0, 1.0\]"),  # fmt: skip
        ("dino_tiny_fmnist", "model.backbone_config.patch_size=5",
         r"model: image_size \(28\) must be a positive multiple of patch_size \(5\)"),
        ("dino_tiny_fmnist", "model.model_type=dino_v9", r"model.model_type 'dino_v9' has no registered pretraining "
                                                         r"model; registered: .*'dino'"),  # fmt: skip
        ("simclr_tiny_fmnist", "model.backbone_config.model_type=vitt",
         r"model.backbone_config.model_type must be ssl_vit, ssl_resnet or a transformers vision model type, "
         r"got 'vitt'"),
        ("simclr_tiny_fmnist", "model.temperature=0", r"model: temperature must be > 0, got 0"),
        ("dino_tiny_fmnist", "model.teacher_temp=-0.04", r"model: teacher_temp must be > 0, got -0.04"),
        ("simclr_tiny_fmnist", "views.size=0", r"views: size must be a positive int, got 0"),
    ],
)
def test_bad_recipe_values_fail_when_the_recipe_loads_naming_field_and_range(recipe, override, message):
    with pytest.raises(ValueError, match=message):
        load_recipe(recipe, [override])


def test_global_batch_not_divisible_by_processes_is_named():
    recipe = load_recipe("simclr_tiny_fmnist", ["train.global_batch_size=30"])
    assert recipe.per_process_batch_size(3) == 10
    with pytest.raises(ValueError, match=r"train.global_batch_size=30 must be divisible by processes x "
                                         r"gradient_accumulation_steps = 4 x 1"):  # fmt: skip
        recipe.per_process_batch_size(4)


def test_bad_recipe_fails_before_the_output_dir_is_touched(tmp_path, saved_dataset):
    values = tiny_recipe_values(saved_dataset, str(tmp_path / "run"))
    values["model"]["temperature"] = -1.0
    with pytest.raises(ValueError, match="temperature must be > 0"):
        train(Recipe.from_dict(values))
    assert not (tmp_path / "run").exists()


# --- accelerate configs and FSDP -----------------------------------------------------------------------------------

CONFIG_NAMES = ["ddp", "fsdp_full_shard", "fsdp_hybrid_shard", "deepspeed_zero2", "deepspeed_zero3", "multi_node"]


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_accelerate_config_is_accepted_by_accelerate_launch(name):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = ACCELERATE_CONFIGS / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith("#") and "accelerate launch --config_file hf_ssl/recipes/accelerate/" in text
    config = load_config_from_file(str(path))  # rejects unknown top-level keys
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "hf_ssl.training", "recipe.yaml"])
    args, _, _ = _validate_launch_command(args)
    assert args.num_processes >= config.num_machines >= 1 and args.num_processes % config.num_machines == 0
    assert args.mixed_precision == "no"  # precision is the recipe's (train.mixed_precision)
    plugin_keys = {**config.fsdp_config, **config.deepspeed_config}
    assert all(hasattr(args, key) for key in plugin_keys), plugin_keys  # every plugin key is a launcher option
    kind = str(config.distributed_type).split(".")[-1]
    assert kind == {"ddp": "MULTI_GPU", "multi_node": "MULTI_GPU", "deepspeed_zero2": "DEEPSPEED",
                    "deepspeed_zero3": "DEEPSPEED"}.get(name, "FSDP")  # fmt: skip
    if config.num_machines > 1:
        assert config.main_process_ip and config.main_process_port
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
    if kind == "FSDP":
        from accelerate.utils import FullyShardedDataParallelPlugin
        from accelerate.utils.constants import FSDP_SHARDING_STRATEGY
        from accelerate.utils.launch import prepare_multi_gpu_env

        if config.fsdp_config["fsdp_version"] == 1:  # FSDP1's plugin wants a GPU to build: check the names
            assert config.fsdp_config["fsdp_sharding_strategy"] in FSDP_SHARDING_STRATEGY
        else:
            with mock.patch.dict(os.environ, prepare_multi_gpu_env(args)):
                plugin = FullyShardedDataParallelPlugin()
            assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True


FSDP_PROBE = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from accelerate import Accelerator
    accelerator = Accelerator()
    state = {"distributed_type": str(accelerator.distributed_type).split(".")[-1],
             "num_processes": accelerator.num_processes, "device": str(accelerator.device)}
    from hf_ssl.training import train
    try:
        state["steps"] = train(sys.argv[1], overrides=["train.max_steps=2", "train.checkpoint_every=1"])["step"]
    except RuntimeError as error:
        state["refused"] = str(error)
    # one file per process: two processes printing to one pipe can interleave their lines
    Path(sys.argv[2], "state-" + os.environ["RANK"] + ".json").write_text(json.dumps(state))
""")


@pytest.mark.slow
def test_engine_under_accelerate_fsdp_plugin(tmp_path, saved_dataset):
    """Two processes under `accelerate launch --use_fsdp`. Where accelerate turns FSDP on, the engine must train two
    steps; where it does not (CPU), the test is skipped with what accelerate chose instead."""
    (tmp_path / "probe.py").write_text(FSDP_PROBE)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_recipe_values(saved_dataset, str(tmp_path / "run"))))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--use_fsdp", "--fsdp_version", "2",
               str(tmp_path / "probe.py"), str(tmp_path / "tiny.yaml"), str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    states = [json.loads((tmp_path / f"state-{rank}.json").read_text()) for rank in range(2)]
    if states[0]["distributed_type"] != "FSDP":
        import accelerate

        # the engine must not let each process train alone on its shard: it refuses, naming the mismatch
        for state in states:
            assert state["refused"].startswith("2 processes were launched but accelerate runs 1"), state
        pytest.skip(
            f"accelerate {accelerate.__version__} with torch {torch.__version__} on {states[0]['device']}: "
            f"`--use_fsdp` gave distributed_type={states[0]['distributed_type']} with num_processes="
            f"{states[0]['num_processes']} in each of the 2 processes; accelerate enables FSDP only over GPU/XPU/"
            "NPU/HPU process groups (and refuses --cpu with --use_fsdp), so FSDP is GPU-only"
        )
    assert [state["steps"] for state in states] == [2, 2]


# --- safe loading --------------------------------------------------------------------------------------------------


def test_no_code_path_unpickles_untrusted_data_or_needs_remote_code():
    """Every `torch.load` in the package passes `weights_only=True`; nothing calls `pickle.load(s)`, `np.load` with
    pickles, or `trust_remote_code`. (Checkpoints themselves are safetensors + JSON, see test_training.py.)"""
    import re

    sources = {path: path.read_text() for path in Path(hf_ssl.__file__).parent.rglob("*.py")}
    calls = [(path, match) for path, text in sources.items() for match in re.findall(r"torch\.load\([^)]*\)", text)]
    assert calls, "expected the optimizer state and .pth conversion to use torch.load"
    for path, call in calls:
        assert "weights_only=True" in call, (path, call)
    for path, text in sources.items():
        assert not re.search(r"pickle\.loads?\(|allow_pickle=True|trust_remote_code=True", text), path
