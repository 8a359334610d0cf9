"""Inference speed and memory of our backbones against their peers, with random weights, fp32, `torch.inference_mode`.

- ViT-S/16 (and ViT-B/16 with `--vit-b`): ours (`SSLViTModel`) against `transformers` `ViTModel` and `Dinov2Model` (sdpa) and
  timm's `VisionTransformer`, all with the same width, depth, heads and image size.
- ResNet-50: ours (`SSLResNetModel`, also in channels-last) against torchvision's `resnet50` and `transformers`'
  `ResNetModel`.

Models of one group are timed in interleaved rounds (see `common.interleave`); the tables show medians over rounds:
ms per batch, images/s, the ratio of our images/s to each peer's (`ours/this (x)`, > 1: ours is faster), the process CPU
time per batch, and the peak memory of one forward pass above the memory held before it (`common.peak_memory`).
`--bf16` adds bf16 autocast rows where the CPU supports it.

    python benchmarks/inference.py            # batch 8, 224 px, 3 rounds: a few minutes on 2 cores
    python benchmarks/inference.py --quick    # tiny models, seconds
"""

import timm
import torch
import torchvision
from transformers import Dinov2Config, Dinov2Model, ResNetConfig, ResNetModel, ViTConfig, ViTModel

from common import (
    base_parser,
    exact_rss_available,
    interleave,
    machine_line,
    median_cpu,
    median_wall,
    peak_memory,
    print_table,
    ratio,
    setup,
)
from hf_ssl.backbones import SSLResNetConfig, SSLResNetModel
from hf_ssl.backbones.configuration_vit import VIT_SIZES, SSLViTConfig
from hf_ssl.backbones.modeling_vit import SSLViTModel

# The --quick ViT: tiny enough for a test, the same for every implementation.
QUICK_VIT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2)


def vit_models(size: dict, image_size: int, patch_size: int) -> dict:
    """Name -> function from pixel values to the last hidden state, for ViTs of one size."""
    width, depth, heads = size["hidden_size"], size["num_hidden_layers"], size["num_attention_heads"]
    common = dict(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads, image_size=image_size,
                  patch_size=patch_size, layer_norm_eps=1e-6, attn_implementation="sdpa")  # fmt: skip
    ours = SSLViTModel(SSLViTConfig(image_size=image_size, patch_size=patch_size, **size)).eval()
    hf_vit = ViTModel(ViTConfig(intermediate_size=4 * width, **common), add_pooling_layer=False).eval()
    hf_dinov2 = Dinov2Model(Dinov2Config(mlp_ratio=4, **common)).eval()
    timm_vit = timm.models.VisionTransformer(
        img_size=image_size, patch_size=patch_size, embed_dim=width, depth=depth, num_heads=heads, num_classes=0
    ).eval()
    return {
        "ours (SSLViTModel)": lambda x: ours(x).last_hidden_state,
        "transformers ViTModel": lambda x: hf_vit(x).last_hidden_state,
        "transformers Dinov2Model": lambda x: hf_dinov2(x).last_hidden_state,
        "timm VisionTransformer": timm_vit.forward_features,
    }


def resnet_models(depth: int) -> dict:
    """Name -> function from pixel values to the last feature map (pooled for torchvision), for ResNets."""
    ours = SSLResNetModel(SSLResNetConfig(depth=depth)).eval()
    ours_cl = SSLResNetModel(SSLResNetConfig(depth=depth, channels_last=True)).eval()
    tv = getattr(torchvision.models, f"resnet{depth}")()
    tv.fc = torch.nn.Identity()
    tv.eval()
    blocks = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3]}[depth]
    hf = ResNetModel(ResNetConfig(depths=blocks, layer_type="basic" if depth < 50 else "bottleneck",
                                  hidden_sizes=[64 * 2**i * (1 if depth < 50 else 4) for i in range(4)],
                                  downsample_in_bottleneck=True)).eval()  # fmt: skip
    return {
        "ours (SSLResNetModel)": lambda x: ours(x).pooler_output,
        "ours, channels_last": lambda x: ours_cl(x).pooler_output,
        "torchvision resnet": tv,
        "transformers ResNetModel": lambda x: hf(x).pooler_output,
    }


def bench_group(title: str, models: dict, pixel_values: torch.Tensor, rounds: int, bf16: bool) -> None:
    """Time the models of one group in interleaved rounds and print their table (ours is the first)."""
    candidates = {}
    for name, forward in models.items():
        candidates[name] = lambda forward=forward: forward(pixel_values)
        if bf16:
            candidates[f"{name}, bf16 autocast"] = lambda forward=forward: _autocast_bf16(forward, pixel_values)
    with torch.inference_mode():
        times = interleave(candidates, rounds)
        memory = {name: peak_memory(fn) for name, fn in candidates.items()} if exact_rss_available() else {}
    batch = pixel_values.shape[0]
    ours = next(iter(candidates))
    rows = []
    for name, runs in times.items():
        seconds = median_wall(runs)
        mib = f"{memory[name] / 2**20:.1f}" if name in memory else "n/a"
        rows.append([name, 1000 * seconds, batch / seconds, ratio(median_wall(times[ours]) ** -1, seconds**-1),
                     1000 * median_cpu(runs), mib])  # fmt: skip
    print_table(title, ["model", "ms/batch", "images/s", "ours/this (x)", "cpu ms/batch", "peak MiB"], rows)


def _autocast_bf16(forward, pixel_values):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return forward(pixel_values)


def main(argv=None):
    parser = base_parser(__doc__)
    parser.add_argument("--batch-size", type=int, default=None, help="8 (4 with --quick)")
    parser.add_argument("--image-size", type=int, default=None, help="224 (32 with --quick)")
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    parser.add_argument("--vit-b", action="store_true", help="also compare ViT-B/16 (4x the time of ViT-S/16)")
    args = parser.parse_args(argv)
    rounds = setup(args, default_rounds=3)
    batch = args.batch_size or (4 if args.quick else 8)
    image_size = args.image_size or (32 if args.quick else 224)
    pixel_values = torch.randn(batch, 3, image_size, image_size)
    print(machine_line(args))
    print(f"inference, fp32, batch {batch}, {image_size} px, median of {rounds} interleaved rounds")
    if args.quick:
        bench_group("tiny ViT (64-d, 2 layers), patch 8", vit_models(QUICK_VIT, image_size, 8), pixel_values,
                    rounds, args.bf16)  # fmt: skip
        bench_group("ResNet-18", resnet_models(18), pixel_values, rounds, args.bf16)
        return
    bench_group("ViT-S/16", vit_models(VIT_SIZES["small"], image_size, 16), pixel_values, rounds, args.bf16)
    if args.vit_b:
        bench_group("ViT-B/16", vit_models(VIT_SIZES["base"], image_size, 16), pixel_values, rounds, args.bf16)
    bench_group("ResNet-50", resnet_models(50), pixel_values, rounds, args.bf16)


if __name__ == "__main__":
    main()
