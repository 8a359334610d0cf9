"""The README cannot rot: every `hf-ssl` command in it parses with the real CLI, packaged recipe names exist, and
its Python examples run against a tiny model saved where the README's paths point."""

import re
import shlex
from pathlib import Path

import pytest
import torch

from hf_ssl import DinoConfig, DinoModel, SSLViTConfig, processor_for
from hf_ssl.cli import build_parser
from hf_ssl.training.recipe import packaged_recipes

README = Path(__file__).resolve().parents[1] / "README.md"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def readme_commands() -> list[list[str]]:
    commands = []
    for block in code_blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("hf-ssl "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_readme_has_the_two_commands_first():
    first_block = code_blocks("bash")[0]
    assert "make demo" in first_block and "make test" in first_block


@pytest.mark.parametrize("argv", readme_commands(), ids=lambda argv: " ".join(argv[:2]))
def test_every_readme_command_parses(argv):
    args = build_parser(argv[0]).parse_args(argv)
    assert args.command == argv[0]
    if argv[0] == "pretrain":
        recipe = args.recipe
        assert recipe in packaged_recipes() or Path(recipe).exists(), recipe


def test_readme_accelerate_launch_line_names_a_packaged_recipe():
    launches = [line for block in code_blocks("bash") for line in block.splitlines() if "accelerate launch" in line]
    assert launches
    for line in launches:
        recipe = shlex.split(line.split("  #")[0])[-1]
        assert Path(README.parent / recipe).exists(), recipe


def test_readme_python_examples_run(tmp_path, monkeypatch):
    model_dir = tmp_path / "demo_output" / "run" / "model"
    config = DinoConfig(backbone_config=SSLViTConfig(image_size=32, patch_size=8, hidden_size=32,
                                                     num_hidden_layers=1, num_attention_heads=2))  # fmt: skip
    DinoModel(config).save_pretrained(model_dir)
    processor_for(config).save_pretrained(model_dir)
    monkeypatch.chdir(tmp_path)
    blocks = code_blocks("python")
    assert len(blocks) >= 2
    namespace = {"pixel_values": torch.randn(1, 3, 32, 32)}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["features"].shape == (1, 32)
    assert namespace["embedding"].shape == (1, 32)
    assert len(namespace["extractor"](namespace["Image"].new("RGB", (40, 40)))[0]) == 32
