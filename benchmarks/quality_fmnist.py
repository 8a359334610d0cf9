"""Representation quality of every method's tiny recipe on Fashion-MNIST under one CPU time budget.

For each method with a `<method>_tiny_fmnist` recipe: a few calibration steps measure its throughput, then the recipe
is trained for the number of steps that fill `--budget-minutes` (its schedules are laid out over those steps), and
its encoder is evaluated by weighted kNN (k=20, T=0.07, the DINO protocol) and a linear probe on frozen features.
Beside each method, measured in the same run: the same network at random initialisation (what training must beat)
and, once, kNN on standardised raw pixels.

    python benchmarks/quality_fmnist.py --budget-minutes 5                      # every method
    python benchmarks/quality_fmnist.py --methods dino simclr --budget-minutes 3
    python benchmarks/quality_fmnist.py --methods mae --recipe-steps           # the recipe's own max_steps

Prints a Markdown table and writes every number to `--out` (JSON). Set OMP_NUM_THREADS=1 on a 2-core machine:
the data workers then get the other core.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path


import hf_ssl  # noqa: F401  (registers the Auto classes)
from hf_ssl.evaluation.knn import knn_eval, raw_pixel_knn
from hf_ssl.evaluation.linear import linear_eval
from hf_ssl.training.engine import train
from hf_ssl.training.recipe import load_recipe, packaged_recipes

SUFFIX = "_tiny_fmnist"


def tiny_methods() -> list[str]:
    return sorted(name[: -len(SUFFIX)] for name in packaged_recipes() if name.endswith(SUFFIX))


def steps_for_budget(recipe: str, output_dir: Path, budget_s: float, calibration_steps: int) -> tuple[int, float]:
    """(steps that fit `budget_s`, measured seconds per step) from a short run of the recipe."""
    overrides = [f"train.output_dir={output_dir}", f"train.max_steps={calibration_steps + 2}", "eval.knn=null",
                 "train.progress_bar=false", "train.log_with=null", "train.log_every=1"]  # fmt: skip
    history = train(recipe, overrides=overrides)["history"]
    rates = [entry["images_per_second"] for entry in history[2:] if "images_per_second" in entry]
    batch_size = load_recipe(recipe).train.batch_size
    seconds_per_step = batch_size / (sum(rates) / len(rates))
    return max(1, math.floor(budget_s / seconds_per_step)), seconds_per_step


def evaluate(model_dir: str, args) -> dict:
    """kNN top-1 of the trained and the random-init encoder, and linear-probe (with BatchNorm) top-1 of the trained
    one."""
    sizes = dict(max_train=args.knn_train, max_test=args.knn_test)
    trained = knn_eval(model_dir, **sizes)["k=20"]["top1"]
    random_init = knn_eval(model_dir, random_init=True, **sizes)["k=20"]["top1"]
    # BatchNorm before the linear layer (MAE's probe): SGD then works at any feature scale
    linear = linear_eval(model_dir, batchnorm=(True,), epochs=args.linear_epochs, **sizes)["linear+bn"]["top1"]
    return {"knn": trained, "knn_random_init": random_init, "linear": linear}


def run_method(method: str, args) -> dict:
    recipe = f"{method}{SUFFIX}"
    run_dir = Path(args.work_dir) / method
    if args.recipe_steps:
        steps, seconds_per_step = load_recipe(recipe).train.max_steps, None
    else:
        steps, seconds_per_step = steps_for_budget(
            recipe, run_dir / "calibration", args.budget_minutes * 60, args.calibration_steps
        )
    start = time.perf_counter()
    overrides = [f"train.output_dir={run_dir}", f"train.max_steps={steps}", "eval.knn=null",
                 f"train.progress_bar={str(args.progress).lower()}", "train.checkpoint_every=1000000"]  # fmt: skip
    result = train(recipe, overrides=overrides)
    train_seconds = time.perf_counter() - start
    row = {"method": method, "steps": steps, "seconds_per_step": seconds_per_step, "train_seconds": train_seconds}
    row.update(evaluate(result["model_dir"], args))
    return row


def markdown(rows: list[dict], pixels: float) -> str:
    lines = [
        "| method | steps | train time (s) | kNN top-1 | same net, random init | linear (+BN) top-1 |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['steps']} | {row['train_seconds']:.0f} | {row['knn']:.2f} | "
            f"{row['knn_random_init']:.2f} | {row['linear']:.2f} |"
        )
    lines.append(f"| raw pixels (standardised) | - | - | {pixels:.2f} | - | - |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["all"], help="methods with a tiny recipe, or 'all'")
    parser.add_argument("--budget-minutes", type=float, default=5.0, help="training time per method")
    parser.add_argument("--recipe-steps", action="store_true", help="train each recipe's own max_steps instead")
    parser.add_argument("--calibration-steps", type=int, default=5)
    parser.add_argument("--knn-train", type=int, default=10000)
    parser.add_argument("--knn-test", type=int, default=2000)
    parser.add_argument("--linear-epochs", type=int, default=30)
    parser.add_argument("--work-dir", default="outputs/quality_fmnist")
    parser.add_argument("--out", default="outputs/quality_fmnist/results.json")
    parser.add_argument("--progress", action="store_true", help="show the training progress bars")
    args = parser.parse_args(argv)

    available = tiny_methods()
    methods = available if args.methods == ["all"] else args.methods
    unknown = sorted(set(methods) - set(available))
    if unknown:
        parser.error(f"no tiny recipe for {unknown}; methods with one: {', '.join(available)}")

    pixels = raw_pixel_knn(args.knn_train, args.knn_test)["top1"]
    rows = []
    for method in methods:
        print(f"== {method}", flush=True)
        rows.append(run_method(method, args))
        print(markdown(rows[-1:], pixels).splitlines()[2], flush=True)
    table = markdown(rows, pixels)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"budget_minutes": args.budget_minutes, "raw_pixels_knn": pixels, "rows": rows}, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
