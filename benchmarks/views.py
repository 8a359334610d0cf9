"""Augmentation throughput of our training views against lightly's transforms, and the data loader against the model.

1. Views, one process, one thread (what one data loader worker has): images/s of our `TwoViewTransform` with
   SimCLR's parameters against lightly's `SimCLRTransform`, and of our `MultiCropTransform` against lightly's
   `DINOTransform` with DINO's parameters (2 x 224 + 6 x 96 px crops; the same scales, jitter, grayscale, blur and
   solarize probabilities, and interpolation). Inputs are PIL images: Fashion-MNIST test images upsampled
   (bicubic) to 256 x 256 RGB, or random noise of that size when the dataset is not installed (the line above the
   table says which).
2. End to end: a `torch.utils.data.DataLoader` over those images with our views and `collate_views`, 0 and 2
   workers, against the pretraining step that consumes its batches (`train_step.py`'s SimCLR ResNet-18 and DINO
   ViT-S/16 at the same crop sizes and batch). `loader/model (x)` > 1: the loader produces images faster than the
   model consumes them. Each loader pass includes starting its workers.

All timings are medians of interleaved rounds (`common.interleave`).

    python benchmarks/views.py            # a few minutes on 2 cores
    python benchmarks/views.py --quick    # seconds
"""

import numpy as np
import torch
from lightly.transforms import DINOTransform, SimCLRTransform
from PIL import Image
from torch.utils.data import DataLoader

import train_step
from common import base_parser, interleave, machine_line, median_wall, print_table, ratio, setup
from hf_ssl.processing.views import MultiCropTransform, TwoViewTransform, collate_views

IMAGE_SIDE = 256


def source_images(count: int) -> tuple[list[Image.Image], str]:
    """`count` RGB PIL images of IMAGE_SIDE px and a phrase saying what they are."""
    try:
        from hf_ssl.data.datasets import fashion_mnist_arrays

        arrays = fashion_mnist_arrays("test")[0][:count]
        what = f"Fashion-MNIST test images, 28 px upsampled (bicubic) to {IMAGE_SIDE}x{IMAGE_SIDE} RGB"
    except (OSError, FileNotFoundError):
        arrays = np.random.default_rng(0).integers(0, 256, (count, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
        what = f"random-noise {IMAGE_SIDE}x{IMAGE_SIDE} RGB images (Fashion-MNIST not installed)"
    images = [Image.fromarray(array).resize((IMAGE_SIDE, IMAGE_SIDE), Image.BICUBIC).convert("RGB") for array in arrays]
    return images, what


def simclr_pair(size: int) -> tuple:
    """Ours and lightly's SimCLR views with the same parameters (lightly's `SimCLRTransform` defaults)."""
    ours = TwoViewTransform(
        size=size, scale=(0.08, 1.0), interpolation="bilinear", color_jitter_prob=0.8, brightness=0.8, contrast=0.8,
        saturation=0.8, hue=0.2, grayscale_prob=0.2, blur_prob=0.5, solarize_prob=0.0,
    )  # fmt: skip
    return ours, SimCLRTransform(input_size=size)


def dino_pair(global_size: int, local_size: int, num_local_crops: int) -> tuple:
    """Ours and lightly's DINO multi-crop views with the same parameters (DINO's, lightly's defaults)."""
    ours = MultiCropTransform(global_crop_size=global_size, local_crop_size=local_size, num_local_crops=num_local_crops)
    lightly = DINOTransform(global_crop_size=global_size, local_crop_size=local_size, n_local_views=num_local_crops)
    return ours, lightly


class ViewsDataset(torch.utils.data.Dataset):
    """`count` samples cycling through `images`: (views of the image, label 0), as the engine's datasets give them."""

    def __init__(self, images: list[Image.Image], transform, count: int):
        self.images, self.transform, self.count = images, transform, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        return self.transform(self.images[index % len(self.images)]), 0


def loader_pass(dataset: ViewsDataset, batch_size: int, workers: int):
    """A function that reads every batch of `dataset` once through a fresh DataLoader with `workers` workers."""

    def run():
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_views)
        for _ in loader:
            pass

    return run


def transform_throughput(images, pairs: dict, rounds: int) -> None:
    candidates = {}
    for name, (ours, lightly) in pairs.items():
        candidates[f"{name} ours"] = lambda ours=ours: [ours(image) for image in images]
        candidates[f"{name} lightly"] = lambda lightly=lightly: [lightly(image) for image in images]
    torch.set_num_threads(1)
    times = interleave(candidates, rounds)
    rows = []
    for name in pairs:
        ours, lightly = median_wall(times[f"{name} ours"]), median_wall(times[f"{name} lightly"])
        rows.append([name, len(images) / ours, len(images) / lightly, ratio(lightly, ours)])
    print_table("views per second of one worker (1 thread)", ["pipeline", "ours images/s", "lightly images/s",
                                                               "ours/lightly (x)"], rows)  # fmt: skip


def loader_against_model(images, sizes: train_step.Sizes, batches: int, rounds: int, threads: int) -> None:
    """Loader images/s with 0 and 2 workers against the images/s of the step that consumes the batches."""
    two_view, _ = simclr_pair(sizes.resnet_size)
    multi_crop = MultiCropTransform(global_crop_size=sizes.global_size, local_crop_size=sizes.local_size,
                                    num_local_crops=sizes.num_local_crops)  # fmt: skip
    setups = {
        f"two-view {sizes.resnet_size} px -> SimCLR ResNet-{sizes.resnet_depth}": (
            two_view, sizes.resnet_batch_size, train_step.simclr_ours(sizes, train_step.two_view_batch(sizes))),
        f"multi-crop 2x{sizes.global_size}+{sizes.num_local_crops}x{sizes.local_size} px -> DINO ViT": (
            multi_crop, sizes.batch_size, train_step.dino_ours(sizes, train_step.dino_batch(sizes))),
    }  # fmt: skip
    torch.set_num_threads(threads)
    rows = []
    for name, (transform, batch_size, step) in setups.items():
        dataset = ViewsDataset(images, transform, batches * batch_size)
        candidates = {"model": lambda step=step: [step() for _ in range(batches)]}
        for workers in (0, 2):
            candidates[f"{workers} workers"] = loader_pass(dataset, batch_size, workers)
        times = interleave(candidates, rounds)
        model = len(dataset) / median_wall(times["model"])
        for workers in (0, 2):
            loader = len(dataset) / median_wall(times[f"{workers} workers"])
            rows.append([name, workers, loader, model, ratio(loader, model)])
    print_table(f"data loader against the model step ({threads} torch threads for the model)",
                ["views -> model", "workers", "loader images/s", "model images/s", "loader/model (x)"], rows)  # fmt: skip


def main(argv=None):
    parser = base_parser(__doc__)
    parser.add_argument("--images", type=int, default=None, help="images per round: 32 (8 with --quick)")
    args = parser.parse_args(argv)
    rounds = setup(args, default_rounds=3)
    count = args.images or (8 if args.quick else 32)
    images, what = source_images(count)
    print(machine_line(args))
    print(f"inputs: {what}; {count} images per round, median of {rounds} interleaved rounds")
    if args.quick:
        pairs = {"two-view 32 px": simclr_pair(32), "multi-crop 2x32+2x16 px": dino_pair(32, 16, 2)}
    else:
        pairs = {"two-view (SimCLR) 224 px": simclr_pair(224), "multi-crop (DINO) 2x224+6x96 px": dino_pair(224, 96, 6)}
    transform_throughput(images, pairs, rounds)
    sizes = train_step.QUICK if args.quick else train_step.DEFAULT
    loader_against_model(images, sizes, batches=1, rounds=rounds, threads=args.threads)


if __name__ == "__main__":
    main()
