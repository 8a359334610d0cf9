"""How our pretraining step time grows with image size, the number of local crops, and the visible-token fraction.

Four small tables, each timing variants of one step in interleaved rounds (`common.interleave`), with the time
and the FLOPs of each variant relative to the first (`time/base (x)`, `flops/base (x)`); FLOPs of one forward + backward
are counted with `torch.utils.flop_counter.FlopCounterMode`. Where time follows compute, the two columns agree.

1. DINO (ViT, 2 global crops): global crop size.
2. DINO: number of local crops next to the 2 global ones.
3. MAE: mask ratio; the encoder only sees the visible patches, so its compute must shrink with them.
4. I-JEPA: fraction of the patches in the context block; the context encoder only sees those (the target encoder
   always sees every patch, and the predictor its targets), so the step shrinks with the context, not to zero.

    python benchmarks/scaling.py            # ViT-S/16, batch 2 (MAE, I-JEPA: 8): a few minutes on 2 cores
    python benchmarks/scaling.py --quick    # tiny models, seconds
"""

from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

import train_step
from common import base_parser, interleave, machine_line, median_wall, print_table, ratio, setup
from hf_ssl.modeling.ssl_ijepa import IJepaSSLConfig, IJepaSSLForPreTraining

NUM_TARGETS = 4  # I-JEPA's target blocks per image


def step_flops(step: train_step.TrainStep) -> int:
    """FLOPs of one forward and backward pass of `step`'s loss (no optimizer step: the weights stay as they are)."""
    with FlopCounterMode(display=False) as counter:
        step.compute_loss().backward()
    step.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def scaling_table(title: str, label: str, variants: dict, rounds: int) -> None:
    """variants: the label's value -> TrainStep; the first is the base of the ratios."""
    flops = {value: step_flops(step) for value, step in variants.items()}
    times = interleave({str(value): step for value, step in variants.items()}, rounds)
    base = next(iter(variants))
    rows = []
    for value in variants:
        seconds = median_wall(times[str(value)])
        rows.append([value, flops[value] / 1e9, 1000 * seconds, ratio(seconds, median_wall(times[str(base)])),
                     ratio(flops[value], flops[base])])  # fmt: skip
    print_table(title, [label, "GFLOP/step", "ms/step", "time/base (x)", "flops/base (x)"], rows)


def ijepa_step(sizes: train_step.Sizes, context_fraction: float) -> train_step.TrainStep:
    """An I-JEPA step whose context block holds `context_fraction` of the patches (random patches: the cost
    depends on their number only) and whose 4 targets hold 10 % each."""
    vit = sizes.vit
    config = IJepaSSLConfig(
        backbone_config=dict(model_type="ssl_vit", image_size=sizes.mae_size, **vit),
        predictor_hidden_size=vit["hidden_size"] // 2, predictor_num_hidden_layers=sizes.decoder[1],
    )  # fmt: skip
    model = IJepaSSLForPreTraining(config)
    batch_size, num_patches = sizes.mae_batch_size, (sizes.mae_size // vit["patch_size"]) ** 2
    num_context, num_target = max(1, round(context_fraction * num_patches)), max(1, num_patches // 10)
    order = torch.rand(batch_size, num_patches).argsort(dim=1)
    context = order[:, :num_context].sort(dim=1).values[None]  # (1, B, N_c)
    targets = torch.stack([order[:, -num_target * (m + 1):][:, :num_target] for m in range(NUM_TARGETS)])[None]
    batch = {"global_views": train_step.mae_batch(sizes)["global_views"], "context_indices": context,
             "target_indices": targets}  # fmt: skip
    return train_step.TrainStep(model, lambda: model(**batch).loss, **train_step.ours_hooks(model))


def main(argv=None):
    parser = base_parser(__doc__)
    args = parser.parse_args(argv)
    rounds = setup(args, default_rounds=3)
    if args.quick:
        sizes = train_step.QUICK
        image_sizes, local_crops = (16, 32), (0, 2)
    else:
        sizes = replace(train_step.DEFAULT, batch_size=2, mae_size=128, mae_batch_size=8)
        image_sizes, local_crops = (64, 96, 128), (0, 4, 8)
    vit = sizes.vit
    vit_name = f"ViT {vit['hidden_size']}-d x {vit['num_hidden_layers']}, patch {vit['patch_size']}"
    print(machine_line(args))
    print(f"our pretraining steps, fp32, AdamW, batch {sizes.batch_size} (MAE, I-JEPA: {sizes.mae_batch_size}), "
          f"median of {rounds} interleaved rounds")  # fmt: skip

    variants = {}
    for size in image_sizes:
        size_sizes = replace(sizes, global_size=size, num_local_crops=0)
        variants[size] = train_step.dino_ours(size_sizes, train_step.dino_batch(size_sizes))
    scaling_table(f"DINO, {vit_name}, 2 global crops: crop size", "crop px", variants, rounds)

    variants = {count: train_step.dino_ours(sizes, train_step.dino_batch(sizes, count)) for count in local_crops}
    scaling_table(f"DINO, {vit_name}, 2x{sizes.global_size} px + N x {sizes.local_size} px: local crops",
                  "local crops", variants, rounds)  # fmt: skip

    batch = train_step.mae_batch(sizes)
    variants = {f"{1 - mask:.2f}": train_step.mae_ours(sizes, batch, mask_ratio=mask) for mask in (0.5, 0.75, 0.9)}
    scaling_table(f"MAE, {vit_name}, {sizes.mae_size} px: visible fraction (1 - mask ratio)", "visible",
                  variants, rounds)  # fmt: skip

    variants = {f"{fraction:.2f}": ijepa_step(sizes, fraction) for fraction in (0.9, 0.5, 0.25)}
    scaling_table(f"I-JEPA, {vit_name}, {sizes.mae_size} px, 4 targets of 10 %: context fraction", "context",
                  variants, rounds)  # fmt: skip


if __name__ == "__main__":
    main()
