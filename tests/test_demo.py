"""`make demo` end to end, with a handful of steps and images (the full run is the same code with more)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


@pytest.mark.skipif(not FMNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_demo_runs_end_to_end(tmp_path):
    env = dict(os.environ, DEMO_OUTPUT=str(tmp_path), DEMO_STEPS="4", DEMO_KNN_TRAIN="300", DEMO_KNN_TEST="100",
               HF_HUB_OFFLINE="1")  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "hf_ssl.demo"], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "same network at random init" in out and "raw pixels" in out
    assert "AutoModel vs pipeline(pool=True): max abs difference" in out
    for path in ("run/model/model.safetensors", "run/pretraining/model.safetensors", "model-transformers/config.json",
                 "pca.png", "training_curves.png"):  # fmt: skip
        assert (tmp_path / path).exists(), path
