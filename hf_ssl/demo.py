"""`make demo`: the main job end to end on a 2-core CPU, on the built-in Fashion-MNIST.

1. pretrain the tiny recipe of a method (`DEMO_METHOD`, default `dino`) with a progress bar;
2. kNN top-1 of its features against the same network at random init and against raw pixels;
3. save it (safetensors) and export the plain-`transformers` version;
4. reload it with `AutoModel` and with `pipeline("image-feature-extraction", pool=True)` and check they agree;
5. write a PCA-of-patch-features figure and the training curves, and print where everything is.

Run it with `python -m hf_ssl.demo`; `DEMO_OUTPUT` (default `demo_output`) is the output folder and `DEMO_STEPS`
overrides the number of training steps, `DEMO_KNN_TRAIN`/`DEMO_KNN_TEST` the kNN set sizes (the test suite runs it
with a handful of each).
"""

import os
import sys
import time
from pathlib import Path

import torch
from PIL import Image

import hf_ssl  # noqa: F401  (registers the Auto classes)

from .data.datasets import fashion_mnist_arrays
from .evaluation.knn import knn_eval, raw_pixel_knn
from .training.engine import train

KNN_TRAIN = int(os.environ.get("DEMO_KNN_TRAIN", 10000))
KNN_TEST = int(os.environ.get("DEMO_KNN_TEST", 2000))


def reload_and_compare(model_dir: Path) -> float:
    """Max abs difference between `AutoModel` pooled features and the pipeline's on a few test images."""
    from transformers import AutoImageProcessor, AutoModel, pipeline

    images = [Image.fromarray(image) for image in fashion_mnist_arrays("test")[0][:4]]
    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    with torch.inference_mode():
        direct = model(**processor(images, return_tensors="pt")).pooler_output
    extractor = pipeline("image-feature-extraction", model=str(model_dir), pool=True)
    piped = torch.cat([features.reshape(1, -1) for features in extractor(images, return_tensors=True)])
    return (direct - piped).abs().max().item()


def figures(model_dir: Path, run_dir: Path, out_dir: Path) -> list[Path]:
    from .evaluation.features import load_model_and_processor
    from .evaluation.visualize import displayable, patch_features, pca_rgb, plot_curves, plot_pca, read_scalars

    model, processor = load_model_and_processor(str(model_dir))
    images = [Image.fromarray(image) for image in fashion_mnist_arrays("test")[0][:6]]
    pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    written = []
    try:
        colours = pca_rgb(patch_features(model, pixel_values))
        written.append(plot_pca([displayable(p, processor) for p in pixel_values], colours, out_dir / "pca.png"))
    except ValueError as error:  # e.g. a backbone without patch tokens
        print(f"  (no PCA figure: {error})")
    written.append(plot_curves(read_scalars(run_dir / "metrics.jsonl"), out_dir / "training_curves.png"))
    return written


def main() -> int:
    method = os.environ.get("DEMO_METHOD", "dino")
    out = Path(os.environ.get("DEMO_OUTPUT", "demo_output"))
    steps = os.environ.get("DEMO_STEPS")
    recipe = f"{method}_tiny_fmnist"
    print(f"hf-ssl demo: {method} on Fashion-MNIST, CPU. Expect about 7 minutes on 2 cores "
          f"(pretraining ~6 min, evaluation ~1 min). Output: {out}/", flush=True)  # fmt: skip
    try:
        fashion_mnist_arrays("test")
    except (FileNotFoundError, OSError) as error:
        print(f"Fashion-MNIST is not available: {error}", file=sys.stderr)
        return 1

    start = time.perf_counter()
    overrides = [f"train.output_dir={out / 'run'}"] + ([f"train.max_steps={steps}"] if steps else [])
    print(f"\n[1/5] pretraining {recipe} ...", flush=True)
    result = train(recipe, overrides=overrides + ["eval.knn=null"])
    model_dir = Path(result["model_dir"])
    print(f"      done in {time.perf_counter() - start:.0f} s, final loss {result['metrics'].get('loss', float('nan')):.4f}")

    print(f"\n[2/5] kNN top-1 (k=20, {KNN_TRAIN} train / {KNN_TEST} test images) ...", flush=True)
    knn_args = dict(max_train=KNN_TRAIN, max_test=KNN_TEST)
    trained = knn_eval(str(model_dir), **knn_args)["k=20"]["top1"]
    random_init = knn_eval(str(model_dir), random_init=True, **knn_args)["k=20"]["top1"]
    pixels = raw_pixel_knn(KNN_TRAIN, KNN_TEST)["top1"]
    print(f"      trained {method}: {trained:.2f}%   same network at random init: {random_init:.2f}%   "
          f"raw pixels: {pixels:.2f}%")  # fmt: skip

    print("\n[3/5] export to plain transformers ...", flush=True)
    export_dir = out / "model-transformers"
    try:
        from .convert.export import export

        export(str(model_dir), export_dir, overwrite=True)
        print(f"      {export_dir} loads with transformers alone (no hf_ssl import)")
    except ValueError as error:
        export_dir = None
        print(f"      not exportable: {error}")

    print("\n[4/5] reload with AutoModel and the image-feature-extraction pipeline ...", flush=True)
    difference = reload_and_compare(model_dir)
    print(f"      AutoModel vs pipeline(pool=True): max abs difference {difference:.2e}")

    print("\n[5/5] figures ...", flush=True)
    written = figures(model_dir, Path(result["output_dir"]), out)
    print(f"\nEverything is in {out}/ ({time.perf_counter() - start:.0f} s):")
    print(f"  pretraining checkpoint  {result['pretraining_dir']}")
    print(f"  feature model           {model_dir}")
    if export_dir is not None:
        print(f"  plain transformers      {export_dir}")
    for path in written:
        print(f"  figure                  {path}")
    return 0 if difference < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
