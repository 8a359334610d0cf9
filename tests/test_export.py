"""`hf-ssl export --to transformers`: the exported folder loads in a Python without hf_ssl and gives our features;
`from_transformers` brings ViTModel / Dinov2Model / Dinov2WithRegistersModel back with equal features."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    ResNetModel,
    ViTConfig,
    ViTModel,
)

from hf_ssl import DinoConfig, DinoModel, SSLViTConfig, SSLViTModel
from hf_ssl.backbones import SSLResNetConfig, SSLResNetModel
from hf_ssl.cli import main
from hf_ssl.convert.export import export, from_transformers, to_transformers
from hf_ssl.processing import processor_for

SIZES = [(32, 32), (48, 48), (32, 48)]
ATOL = 1e-5

# name -> (our ViT settings, the transformers class it must become, whether features match at every size)
VARIANTS = {
    "dino": (dict(hidden_size=32), "ViTModel", True),
    "layerscale": (dict(hidden_size=64, layerscale_value=0.1), "Dinov2Model", True),
    "registers": (dict(hidden_size=32, layerscale_value=0.1, num_register_tokens=2, interpolate_antialias=True),
                  "Dinov2WithRegistersModel", True),
    "swiglu": (dict(hidden_size=64, use_swiglu_ffn=True), "Dinov2Model", True),
    "dino_offset": (dict(hidden_size=32, interpolate_offset=0.1), "ViTModel", False),
}

# Runs in a fresh interpreter that never imports hf_ssl: loads each exported folder with the Auto classes and
# writes last_hidden_state / pooler_output at every size and the processor's pixel_values of one image.
PLAIN_TRANSFORMERS = textwrap.dedent(
    """
    import json, sys
    import torch
    from PIL import Image
    from safetensors.torch import load_file, save_file
    from transformers import AutoImageProcessor, AutoModel

    inputs, result_path, folders = load_file(sys.argv[1]), sys.argv[2], sys.argv[3:]
    image = Image.fromarray(inputs.pop("image").numpy())
    results, info = {}, {}
    for folder in folders:
        model, loading = AutoModel.from_pretrained(folder, output_loading_info=True)
        processor = AutoImageProcessor.from_pretrained(folder)
        kwargs = {"interpolate_pos_encoding": True} if model.config.model_type == "vit" else {}
        with torch.no_grad():
            for name, pixels in inputs.items():
                output = model(pixels, **kwargs)
                results[f"{folder}|{name}|last"] = output.last_hidden_state
                results[f"{folder}|{name}|pooled"] = output.pooler_output
        results[f"{folder}|pixel_values"] = processor(image, return_tensors="pt")["pixel_values"]
        info[folder] = dict(cls=type(model).__name__, processor=type(processor).__name__,
                            missing=sorted(loading["missing_keys"]), unexpected=sorted(loading["unexpected_keys"]))
    assert "hf_ssl" not in sys.modules, "the subprocess imported hf_ssl"
    save_file({key: value.contiguous() for key, value in results.items()}, result_path)
    with open(result_path + ".json", "w") as file:
        json.dump(info, file)
    """
)


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Every parameter away from its init (zeros, ones, constants), so that a wrong key shows in the features."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


def tiny_dino(seed: int = 0, **vit_settings) -> DinoModel:
    settings = dict(image_size=32, patch_size=8, num_hidden_layers=2, num_attention_heads=2, interpolate_offset=0.0)
    model = DinoModel(DinoConfig(backbone_config=SSLViTConfig(**{**settings, **vit_settings}))).eval()
    randomize_(model, seed)
    return model


def pixel_inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {f"{h}x{w}": torch.randn(2, 3, h, w, generator=generator) for h, w in SIZES}


def sample_image():
    rng = np.random.default_rng(2)
    return rng.integers(0, 256, size=(45, 60, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every variant saved, exported through the CLI, and run once in one plain-transformers subprocess."""
    root = tmp_path_factory.mktemp("export")
    models, processors, folders = {}, {}, []
    for index, (name, (settings, _, _)) in enumerate(VARIANTS.items()):
        model = models[name] = tiny_dino(seed=index, **settings)
        source, out = root / f"{name}-ssl", root / f"{name}-plain"
        model.save_pretrained(source)
        if name == "dino":  # a processor of its own: its values must be carried over
            processors[name] = processor_for(model.config, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3])
            processors[name].save_pretrained(source)
        else:  # none: the export falls back to our default for the model
            processors[name] = processor_for(model.config)
        assert main(["export", "--to", "transformers", str(source), str(out)]) == 0
        folders.append(str(out))

    inputs = pixel_inputs()
    save_file({**inputs, "image": torch.from_numpy(sample_image())}, root / "inputs.safetensors")
    result_path = root / "results.safetensors"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    completed = subprocess.run(
        [sys.executable, "-c", PLAIN_TRANSFORMERS, str(root / "inputs.safetensors"), str(result_path), *folders],
        env=env, cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = load_file(result_path)
    info = json.loads((root / "results.safetensors.json").read_text())
    return dict(root=root, models=models, processors=processors, inputs=inputs, results=results, info=info)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_exported_model_gives_our_features_without_hf_ssl(exported, name):
    _, class_name, all_sizes = VARIANTS[name]
    folder = str(exported["root"] / f"{name}-plain")
    info = exported["info"][folder]
    assert info["cls"] == class_name
    assert info["missing"] == [] and info["unexpected"] == []

    model, results = exported["models"][name], exported["results"]
    for size, pixels in exported["inputs"].items():
        with torch.no_grad():
            ours = model(pixels)
        theirs = results[f"{folder}|{size}|last"]
        assert theirs.shape == ours.last_hidden_state.shape
        diff = (theirs - ours.last_hidden_state).abs().max().item()
        if size == "32x32" or all_sizes:
            assert diff <= ATOL, f"{name} at {size}: max abs diff {diff}"
            # pooler_output is the CLS token (ViTModel's pooler is exported as the identity)
            torch.testing.assert_close(results[f"{folder}|{size}|pooled"], ours.pooler_output, atol=ATOL, rtol=0)
        else:
            # DINO's 0.1 interpolation offset is not what transformers does: away from the native size they differ
            assert diff > 1e-3, f"{name} at {size} unexpectedly equal"


def test_exported_processor_matches_ours(exported):
    image = Image.fromarray(sample_image())
    for name in VARIANTS:
        folder = str(exported["root"] / f"{name}-plain")
        assert exported["info"][folder]["processor"] == "BitImageProcessor"
        ours = exported["processors"][name](image, return_tensors="pt")["pixel_values"]
        theirs = exported["results"][f"{folder}|pixel_values"]
        assert theirs.shape == ours.shape == (1, 3, 32, 32)
        torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    # the carried-over statistics really are the source's (not ImageNet's)
    saved = json.loads((exported["root"] / "dino-plain" / "preprocessor_config.json").read_text())
    assert saved["image_mean"] == [0.4, 0.5, 0.6] and saved["image_std"] == [0.2, 0.25, 0.3]
    assert saved["crop_size"] == {"height": 32, "width": 32} and saved["size"] == {"shortest_edge": 37}


def randomized(model: torch.nn.Module, seed: int = 3) -> torch.nn.Module:
    randomize_(model, seed)
    return model.eval()


TRANSFORMERS_MODELS = {
    "vit": lambda: ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=96, image_size=32, patch_size=8, layer_norm_eps=1e-6)),
    "dinov2": lambda: Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                               mlp_ratio=2, image_size=32, patch_size=8)),
    "dinov2_swiglu": lambda: Dinov2Model(Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                                      image_size=32, patch_size=8, use_swiglu_ffn=True)),
    "dinov2_registers": lambda: Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
        num_register_tokens=3)),
}


@pytest.mark.parametrize("name", list(TRANSFORMERS_MODELS))
def test_from_transformers_gives_equal_features(tmp_path, name):
    source = randomized(TRANSFORMERS_MODELS[name]())
    source.save_pretrained(tmp_path)
    ours = from_transformers(tmp_path)
    dino = from_transformers(source, DinoModel)
    assert isinstance(ours, SSLViTModel) and isinstance(dino, DinoModel)
    kwargs = {"interpolate_pos_encoding": True} if isinstance(source, ViTModel) else {}
    for pixels in pixel_inputs().values():
        with torch.no_grad():
            expected = source(pixels, **kwargs).last_hidden_state
            torch.testing.assert_close(ours(pixels).last_hidden_state, expected, atol=ATOL, rtol=0)
            torch.testing.assert_close(dino(pixels).pooler_output, expected[:, 0], atol=ATOL, rtol=0)
    # and back: the round trip gives the source class with the same weights
    again = to_transformers(dino)
    assert type(again) is type(source)
    for key, value in source.state_dict().items():
        if not key.startswith("pooler."):
            torch.testing.assert_close(again.state_dict()[key], value, atol=0, rtol=0)


def test_no_cls_token_cannot_be_exported():
    model = tiny_dino(hidden_size=32, use_cls_token=False, pooling="mean")
    with pytest.raises(ValueError, match="CLS token"):
        to_transformers(model, ignore_pooling=True)


def test_mean_pooling_needs_ignore_pooling():
    model = tiny_dino(hidden_size=32, pooling="mean")
    with pytest.raises(ValueError, match="ignore_pooling"):
        to_transformers(model)
    exported = to_transformers(model, ignore_pooling=True)
    pixels = pixel_inputs()["32x32"]
    with torch.no_grad():
        torch.testing.assert_close(exported(pixels).last_hidden_state, model(pixels).last_hidden_state,
                                   atol=ATOL, rtol=0)


def test_non_integer_mlp_ratio_has_no_dinov2_equivalent():
    with pytest.raises(ValueError, match="integer mlp_ratio"):
        to_transformers(tiny_dino(hidden_size=32, layerscale_value=0.1, mlp_ratio=2.5))


def test_bad_inputs_get_clear_errors(tmp_path):
    with pytest.raises(TypeError, match="hf_ssl backbone"):
        to_transformers(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="ViTModel, Dinov2Model"):
        from_transformers(tiny_dino(hidden_size=32))
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="overwrite"):
        export(tiny_dino(hidden_size=32), tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_export_overwrite_replaces_folder_atomically(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    export(tiny_dino(hidden_size=32), out, overwrite=True)
    assert sorted(path.name for path in out.iterdir()) == ["config.json", "model.safetensors",
                                                          "preprocessor_config.json"]
    assert [path.name for path in tmp_path.iterdir()] == ["out"]  # no staging or backup folder left behind


def test_resnet_and_transformers_backbones_are_dispatched():
    resnet = DinoModel(DinoConfig(backbone_config=SSLResNetConfig(depth=18))).eval()
    exported = to_transformers(resnet)
    assert isinstance(exported, ResNetModel)
    back = from_transformers(exported, DinoModel)
    assert isinstance(back, DinoModel) and isinstance(back.backbone, SSLResNetModel)
    pixels = pixel_inputs()["32x32"]
    with torch.no_grad():
        torch.testing.assert_close(back(pixels).pooler_output, resnet(pixels).pooler_output, atol=ATOL, rtol=0)

    vit_config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                           image_size=32, patch_size=8)
    wrapped = DinoModel(DinoConfig(backbone_config=vit_config))
    assert to_transformers(wrapped) is wrapped.backbone.model  # already plain transformers
