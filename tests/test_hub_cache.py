"""Hub ids offline: a model put into the standard Hugging Face cache layout loads by its id with HF_HUB_OFFLINE=1
through `AutoModel` and the `image-feature-extraction` pipeline, as after a real download."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hf_ssl import DinoConfig, DinoModel, SSLViTConfig
from hf_ssl.convert.hub_cache import add_to_hub_cache
from hf_ssl.processing import processor_for

REPO_ID = "org/dino-tiny"

LOAD_BY_ID = textwrap.dedent(
    """
    import sys
    import torch
    from PIL import Image
    from safetensors.torch import save_file
    import hf_ssl
    from transformers import AutoModel, pipeline
    from transformers.utils.hub import cached_file

    image_path, pixels_path, result_path = sys.argv[1:4]
    model = AutoModel.from_pretrained("org/dino-tiny")
    extractor = pipeline("image-feature-extraction", model="org/dino-tiny", pool=True)
    pixels = torch.load(pixels_path)
    with torch.no_grad():
        last_hidden_state = model(pixels).last_hidden_state
    pooled = extractor(Image.open(image_path), return_tensors=True)
    print(type(model).__name__, cached_file("org/dino-tiny", "config.json"))
    save_file({"last_hidden_state": last_hidden_state, "pooled": pooled.reshape(1, -1)}, result_path)
    """
)


def tiny_dino() -> DinoModel:
    config = SSLViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    model = DinoModel(DinoConfig(backbone_config=config)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model


def test_cache_layout_is_the_hub_one(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "a.txt").write_text("{}")  # same content: one blob
    cache = tmp_path / "cache"
    snapshot = add_to_hub_cache(folder, REPO_ID, cache_dir=cache)

    storage = cache / "models--org--dino-tiny"
    commit = (storage / "refs" / "main").read_text()
    assert snapshot == storage / "snapshots" / commit and len(commit) == 40
    assert len(list((storage / "blobs").iterdir())) == 1
    for name in ("config.json", "sub/a.txt"):
        link = snapshot / name
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        assert link.read_text() == "{}"
    assert add_to_hub_cache(folder, REPO_ID, cache_dir=cache) == snapshot  # same files: same snapshot

    (folder / "config.json").write_text('{"changed": true}')
    new_snapshot = add_to_hub_cache(folder, REPO_ID, cache_dir=cache)
    assert new_snapshot != snapshot and (storage / "refs" / "main").read_text() == new_snapshot.name

    with pytest.raises(ValueError, match="not a folder"):
        add_to_hub_cache(tmp_path / "missing", REPO_ID, cache_dir=cache)


def test_hub_id_loads_offline_from_cache(tmp_path):
    model = tiny_dino()
    processor = processor_for(model.config)
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    cache = tmp_path / "hf_home" / "hub"
    add_to_hub_cache(folder, REPO_ID, cache_dir=cache)

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(40, 52, 3), dtype=np.uint8))
    image.save(tmp_path / "image.png")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.save(pixels, tmp_path / "pixels.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_CACHE": str(cache),
           "TRANSFORMERS_VERBOSITY": "error"}
    completed = subprocess.run(
        [sys.executable, "-c", LOAD_BY_ID, str(tmp_path / "image.png"), str(tmp_path / "pixels.pt"),
         str(tmp_path / "result.safetensors")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    class_name, config_path = completed.stdout.split()[-2:]
    assert class_name == "DinoModel" and config_path.startswith(str(cache / "models--org--dino-tiny" / "snapshots"))

    result = load_file(tmp_path / "result.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(result["last_hidden_state"], model(pixels).last_hidden_state, atol=1e-5, rtol=0)
        expected = model(**processor(Image.open(tmp_path / "image.png"), return_tensors="pt")).pooler_output
    torch.testing.assert_close(result["pooled"], expected, atol=1e-5, rtol=0)
