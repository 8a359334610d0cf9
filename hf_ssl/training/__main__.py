"""`python -m hf_ssl.training RECIPE ...` (and `accelerate launch -m hf_ssl.training RECIPE ...`)."""

import argparse
import sys

from .cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hf_ssl.training", description="Pretrain a model from a recipe.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
