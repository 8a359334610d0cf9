"""How close our backbones' inference comes to the machine's measured fp32 matmul peak.

The peak is the FLOP/s of a large square fp32 matmul (2 N^3 FLOPs, N = 2048), the best a dense kernel reaches on
this machine with these threads. Each model's FLOPs per batch are counted with `torch.utils.flop_counter.FlopCounterMode`
(matmuls, convolutions and attention; 2 FLOPs per multiply-add; element-wise work is not counted, so it costs time
without adding FLOPs), and its achieved FLOP/s is that count over the median forward time. The matmul and the models
are timed in the same interleaved rounds (`common.interleave`), so `achieved/peak (x)` compares like with like.

    python benchmarks/roofline.py            # ViT-S/16, ViT-B/16, ResNet-50 at 224 px, batch 8: a few minutes
    python benchmarks/roofline.py --quick    # tiny models, seconds
"""

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import base_parser, interleave, machine_line, median_wall, print_table, ratio, setup
from hf_ssl.backbones import SSLResNetConfig, SSLResNetModel
from hf_ssl.backbones.configuration_vit import VIT_SIZES, SSLViTConfig
from hf_ssl.backbones.modeling_vit import SSLViTModel


def count_flops(forward, pixel_values: torch.Tensor) -> int:
    """FLOPs of one forward pass, counted by `FlopCounterMode`."""
    with FlopCounterMode(display=False) as counter:
        forward(pixel_values)
    return counter.get_total_flops()


def models(quick: bool, image_size: int) -> dict:
    """Name -> our backbone, in eval mode."""
    if quick:
        vit = SSLViTModel(SSLViTConfig(image_size=image_size, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                       num_attention_heads=2)).eval()  # fmt: skip
        resnet = SSLResNetModel(SSLResNetConfig(depth=18)).eval()
        return {"tiny ViT, patch 8": vit, "ResNet-18": resnet}
    return {
        "ViT-S/16": SSLViTModel(SSLViTConfig(image_size=image_size, patch_size=16, **VIT_SIZES["small"])).eval(),
        "ViT-B/16": SSLViTModel(SSLViTConfig(image_size=image_size, patch_size=16, **VIT_SIZES["base"])).eval(),
        "ResNet-50": SSLResNetModel(SSLResNetConfig(depth=50)).eval(),
    }


def main(argv=None):
    parser = base_parser(__doc__)
    parser.add_argument("--matmul-size", type=int, default=None, help="N of the peak's N x N matmul: 2048 (256 quick)")
    parser.add_argument("--batch-size", type=int, default=None, help="8 (2 with --quick)")
    parser.add_argument("--image-size", type=int, default=None, help="224 (32 with --quick)")
    args = parser.parse_args(argv)
    rounds = setup(args, default_rounds=3)
    n = args.matmul_size or (256 if args.quick else 2048)
    batch = args.batch_size or (2 if args.quick else 8)
    image_size = args.image_size or (32 if args.quick else 224)

    a, b = torch.randn(n, n), torch.randn(n, n)
    pixel_values = torch.randn(batch, 3, image_size, image_size)
    named = models(args.quick, image_size)
    with torch.inference_mode():
        flops = {name: count_flops(model, pixel_values) for name, model in named.items()}
        candidates = {"matmul": lambda: torch.mm(a, b)}
        candidates.update({name: (lambda model=model: model(pixel_values)) for name, model in named.items()})
        times = interleave(candidates, rounds)
    peak = 2 * n**3 / median_wall(times["matmul"])

    print(machine_line(args))
    print(f"fp32 inference, batch {batch}, {image_size} px, median of {rounds} interleaved rounds")
    rows = [[f"matmul {n}x{n} (peak)", "", 1000 * median_wall(times["matmul"]), "", peak / 1e9, 1.0]]
    for name in named:
        seconds = median_wall(times[name])
        achieved = flops[name] / seconds
        rows.append([name, flops[name] / batch / 1e9, 1000 * seconds, batch / seconds, achieved / 1e9,
                     ratio(achieved, peak)])  # fmt: skip
    print_table("achieved fp32 FLOP/s against the measured matmul peak",
                ["model", "GFLOP/image", "ms/batch", "images/s", "GFLOP/s", "achieved/peak (x)"], rows)  # fmt: skip


if __name__ == "__main__":
    main()
