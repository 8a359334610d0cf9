"""`hf-ssl pretrain RECIPE [--dataset D] [--output-dir O] [--resume [PATH]] [key.sub=value ...]`.

Also `python -m hf_ssl.training ...` with the same arguments, so `accelerate launch -m hf_ssl.training RECIPE` runs
on several processes. RECIPE is a YAML path or the name of a packaged recipe (`dino_tiny_fmnist`). Options and
overrides may come in any order after RECIPE.
"""

import argparse
import json
import os

from .recipe import packaged_recipes


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", help="dataset to pretrain on (sets data.dataset): a builtin name, a Hub id, "
                        "an image folder or a saved dataset")  # fmt: skip
    parser.add_argument("--output-dir", help="where checkpoints and the final model go (sets train.output_dir)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                        help="continue from the newest checkpoint of the output dir, or from PATH")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help=f"recipe YAML, or a packaged recipe: {', '.join(packaged_recipes())}")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                        help="overrides such as optim.lr=1e-3 train.max_steps=10 (values read as YAML)")  # fmt: skip
    _add_options(parser)


def _split_after_recipe(args: argparse.Namespace) -> argparse.Namespace:
    """Parse what followed RECIPE (options and overrides, intermixed) into `args`."""
    parser = argparse.ArgumentParser(prog="hf-ssl pretrain RECIPE", add_help=False)
    parser.add_argument("overrides", nargs="*")
    _add_options(parser)
    rest = parser.parse_intermixed_args(args.overrides)
    overrides = rest.overrides
    # `--resume key=value`: the override is not a checkpoint path
    if isinstance(rest.resume, str) and "=" in rest.resume and not os.path.exists(rest.resume):
        rest.resume, overrides = True, [rest.resume, *overrides]
    for name in ("dataset", "output_dir", "resume"):
        if getattr(rest, name) is not None:
            setattr(args, name, getattr(rest, name))
    args.overrides = overrides
    return args


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from .engine import train
    from .recipe import load_recipe

    args = _split_after_recipe(args)
    overrides = list(args.overrides)
    if args.dataset is not None:
        overrides.append(f"data.dataset={json.dumps(args.dataset)}")
    if args.output_dir is not None:
        overrides.append(f"train.output_dir={json.dumps(args.output_dir)}")
    result = train(load_recipe(args.recipe, overrides), resume=args.resume or False)
    if PartialState().is_main_process:
        summary = {key: value for key, value in result.items() if key != "history"}
        print(json.dumps(summary, indent=2, default=str))
    return 0
