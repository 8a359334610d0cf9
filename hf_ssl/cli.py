"""`hf-ssl` command line: one subcommand per job, each defined next to the code it drives.

A subcommand module exposes `add_arguments(parser)` and `run(args) -> int | None`; it is imported only when
its subcommand runs, so `hf-ssl --help` stays fast.
"""

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "pretrain": ("hf_ssl.training.cli", "pretrain a model from a recipe YAML"),
    "extract": ("hf_ssl.evaluation.extract", "write features of a folder of images to safetensors"),
    "export": ("hf_ssl.convert.export", "export a model to plain transformers classes (no hf_ssl needed to load)"),
    "eval": ("hf_ssl.evaluation.cli", "evaluate a model: kNN, linear probe, few-shot, label-free metrics, fine-tuning"),
    "visualize": (
        "hf_ssl.evaluation.visualize",
        "figures: attention maps, PCA of patch features, kNN retrieval grid, training curves, t-SNE",
    ),
    "convert": ("hf_ssl.convert.cli", "convert an original research checkpoint to an hf_ssl model"),
    "push": ("hf_ssl.convert.hub", "upload a model folder to the Hub with a generated model card"),
    "fit-tokenizer": ("hf_ssl.modeling.beit_ssl.tokenizer", "fit a k-means patch tokenizer (BEiT's visual tokens)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-ssl", description="Self-supervised vision models, the Hugging Face way.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module_name).add_arguments(subparser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command is not None and command not in COMMANDS:
        build_parser().error(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}")
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return module.run(args) or 0
    except (ValueError, OSError) as error:  # bad input: one clear line, no traceback
        print(f"hf-ssl {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
