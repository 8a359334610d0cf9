"""Inference speed of our ViT-S/16 against `transformers.ViTModel` and timm's `vit_small_patch16_224`.

All three are built with random weights and the same width/depth/heads, run in fp32 under `torch.inference_mode`
on CPU, and timed in interleaved rounds (ours, transformers, timm, ours, ...) so that load from other processes hits
each model alike; the table shows medians over rounds: wall time, images/s, the ratio of our images/s to each
peer's, and the process CPU time per batch (all threads), which other processes on a shared machine disturb less.
Memory is not reported: the three models share one process, so its peak RSS says nothing about any one of them.

    python benchmarks/inference.py --batch-size 8 --rounds 5 --threads 2
"""

import argparse
import os
import statistics
import time

import timm
import torch
from transformers import ViTConfig, ViTModel

from hf_ssl.backbones.configuration_vit import SSLViTConfig
from hf_ssl.backbones.modeling_vit import SSLViTModel


def build_models(image_size: int) -> dict:
    """Name -> (model, function turning pixel values into the last hidden state) for the three ViT-S/16s."""
    ours = SSLViTModel(SSLViTConfig.from_size("small", patch_size=16, image_size=image_size))
    hf_config = ViTConfig(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
        image_size=image_size, patch_size=16, layer_norm_eps=1e-6, attn_implementation="sdpa",
    )
    transformers_vit = ViTModel(hf_config, add_pooling_layer=False)
    timm_vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=image_size)
    return {
        "ours (SSLViTModel)": (ours, lambda x: ours(x).last_hidden_state),
        "transformers ViTModel": (transformers_vit, lambda x: transformers_vit(x).last_hidden_state),
        "timm VisionTransformer": (timm_vit, timm_vit.forward_features),
    }


def time_batches(forward, pixel_values: torch.Tensor, steps: int) -> tuple[float, float]:
    """Wall and process-CPU seconds per batch, averaged over `steps` forward passes."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        forward(pixel_values)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per model, after one warm-up round")
    parser.add_argument("--steps", type=int, default=1, help="forward passes per round")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    models = build_models(args.image_size)
    pixel_values = torch.randn(args.batch_size, 3, args.image_size, args.image_size)

    for model, _ in models.values():
        model.eval()

    with torch.inference_mode():
        # the warm-up round, which also checks that all three return the same shape
        shapes = {name: tuple(forward(pixel_values).shape) for name, (_, forward) in models.items()}
        if len(set(shapes.values())) != 1:
            raise RuntimeError(f"the models disagree on the output shape: {shapes}")
        seconds = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, (_, forward) in models.items():
                seconds[name].append(time_batches(forward, pixel_values, args.steps))

    images_per_s = {name: args.batch_size / statistics.median(wall for wall, _ in times)
                    for name, times in seconds.items()}
    cpu_ms = {name: 1000 * statistics.median(cpu for _, cpu in times) for name, times in seconds.items()}
    ours_name = next(iter(models))
    print(f"ViT-S/16, {args.image_size}px, batch {args.batch_size}, fp32, {args.threads} threads, "
          f"median of {args.rounds} rounds x {args.steps} steps (torch {torch.__version__})")
    print(f"{'model':<24} {'ms/batch':>10} {'images/s':>10} {'ours/this':>10} {'cpu ms/batch':>13}")
    for name, rate in images_per_s.items():
        print(f"{name:<24} {1000 * args.batch_size / rate:>10.1f} {rate:>10.2f} "
              f"{images_per_s[ours_name] / rate:>10.3f} {cpu_ms[name]:>13.1f}")


if __name__ == "__main__":
    main()
