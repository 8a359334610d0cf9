"""Pretraining step time and memory of our DINO, SimCLR, BYOL and MAE against `lightly` and `transformers`.

One step is what the engine does per batch: forward to the loss, backward, the method's before-optimizer hook,
AdamW, and the EMA / after-step hook. Every implementation of a method gets the same batch, the same crops, the same
optimizer (AdamW, lr 1e-4, weight decay 0.04) and equal head sizes:

- DINO (multi-crop: 2 global + N local crops), SimCLR and BYOL: our `*ForPreTraining` against lightly wired as its
  examples do (its heads, its loss, `deactivate_requires_grad`, `update_momentum` with `cosine_schedule`, one
  backbone pass per view) around the *same backbone class* (our ViT-S/16 for DINO, our ResNet-18 for SimCLR and
  BYOL), so the ratio measures everything but the backbone's own speed (that is `inference.py`'s).
- MAE: ours against `transformers` `ViTMAEForPreTraining` and lightly's MAE example (its `MaskedVisionTransformerTIMM`
  around a timm ViT, `MAEDecoderTIMM`, `random_token_mask`), all with the same encoder, decoder, 75 % masking and
  plain-pixel MSE targets; every one draws its masks inside the step.

Steps are timed in interleaved rounds (`common.interleave`); the tables give medians: ms per step, its phases
(forward; backward; hooks + optimizer + EMA), images/s, `ours/this (x)` (this implementation's step time over ours: > 1
means ours is faster), and the peak memory of one step above what the process held before it (`common.peak_memory`:
the kernel's RSS high-water mark, so activations, gradients and optimizer temporaries, not the weights).

    python benchmarks/train_step.py            # ViT-S/16 96/48 px, ResNet-18 96 px, MAE 224 px: a few minutes
    python benchmarks/train_step.py --quick    # tiny models, seconds
"""

import copy
import statistics
import time
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss, NegativeCosineSimilarity, NTXentLoss
from lightly.models import utils as lightly_utils
from lightly.models.modules import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    DINOProjectionHead,
    MAEDecoderTIMM,
    MaskedVisionTransformerTIMM,
    SimCLRProjectionHead,
)
from lightly.utils.scheduler import cosine_schedule
from torch import nn
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from common import (
    base_parser,
    exact_rss_available,
    interleave,
    machine_line,
    median_wall,
    peak_memory,
    print_table,
    ratio,
    setup,
)
from hf_ssl.backbones import SSLResNetConfig, SSLResNetModel, feature_dim
from hf_ssl.backbones.configuration_vit import VIT_SIZES, SSLViTConfig
from hf_ssl.backbones.modeling_vit import SSLViTModel
from hf_ssl.modeling.byol import BYOLConfig, BYOLForPreTraining
from hf_ssl.modeling.dino import DinoConfig, DinoForPreTraining
from hf_ssl.modeling.mae import MaeConfig, MaeForPreTraining
from hf_ssl.modeling.simclr import SimCLRConfig, SimCLRForPreTraining
from hf_ssl.training.progress import TrainingProgress

LEARNING_RATE, WEIGHT_DECAY = 1e-4, 0.04
BASE_MOMENTUM = 0.996
# Every step is timed as one in the second epoch of a 10-epoch run: past DINO's last-layer freeze.
PROGRESS = TrainingProgress(step=150, total_steps=1000, steps_per_epoch=100)


@dataclass(frozen=True)
class Sizes:
    """Model and batch sizes of one benchmark mode; every implementation of a method uses the same."""

    vit: dict  # SSLViTConfig fields: width, depth, heads, patch size
    global_size: int
    local_size: int
    num_local_crops: int
    batch_size: int
    dino_head: tuple[int, int, int]  # hidden, bottleneck, prototypes
    resnet_depth: int
    resnet_size: int
    resnet_batch_size: int
    projection: tuple[int, int]  # hidden, output width of the SimCLR / BYOL heads
    mae_size: int
    mae_batch_size: int
    decoder: tuple[int, int, int]  # MAE decoder width, depth, heads
    mask_ratio: float = 0.75


DEFAULT = Sizes(
    vit=dict(VIT_SIZES["small"], patch_size=16), global_size=96, local_size=48, num_local_crops=4, batch_size=8,
    dino_head=(2048, 256, 4096), resnet_depth=18, resnet_size=96, resnet_batch_size=16, projection=(1024, 256),
    mae_size=224, mae_batch_size=8, decoder=(256, 2, 8),
)  # fmt: skip
QUICK = Sizes(
    vit=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8), global_size=32,
    local_size=16, num_local_crops=2, batch_size=4, dino_head=(64, 32, 128), resnet_depth=18, resnet_size=32,
    resnet_batch_size=4, projection=(64, 32), mae_size=32, mae_batch_size=4, decoder=(32, 1, 2),
)  # fmt: skip


class TrainStep:
    """One optimizer step: `compute_loss()`, backward, `before_optimizer()`, AdamW on the parameters that need
    gradients, `after_optimizer()` (EMA). Keeps the wall time of its three phases for every call."""

    def __init__(self, model: nn.Module, compute_loss, before_optimizer=None, after_optimizer=None):
        self.model = model.train()
        self.compute_loss = compute_loss
        self.before_optimizer = before_optimizer or (lambda: None)
        self.after_optimizer = after_optimizer or (lambda: None)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        self.phases: list[tuple[float, float, float]] = []

    def __call__(self) -> None:
        start = time.perf_counter()
        loss = self.compute_loss()
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        self.before_optimizer()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.after_optimizer()
        end = time.perf_counter()
        self.phases.append((forward - start, backward - forward, end - backward))

    def median_phases(self, last: int) -> tuple[float, float, float]:
        """Median seconds of (forward, backward, hooks + optimizer + EMA) over the last `last` calls."""
        return tuple(statistics.median(phase) for phase in zip(*self.phases[-last:]))


class Pooled(nn.Module):
    """A backbone as lightly's examples use one: pixels in, one feature vector per image out (`pooler_output`)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values).pooler_output


def vit_config(sizes: Sizes, image_size: int, **overrides) -> SSLViTConfig:
    return SSLViTConfig(image_size=image_size, **{**sizes.vit, **overrides})


def resnet_config(sizes: Sizes) -> SSLResNetConfig:
    return SSLResNetConfig(depth=sizes.resnet_depth)


def ours_hooks(model: nn.Module, progress: TrainingProgress = PROGRESS) -> dict:
    """The engine's calls of a model's step hooks, with a fixed training progress."""
    hooks = {}
    if hasattr(model, "on_before_optimizer_step"):
        hooks["before_optimizer"] = lambda: model.on_before_optimizer_step(progress)
    if hasattr(model, "on_step_end"):
        hooks["after_optimizer"] = lambda: model.on_step_end(progress)
    return hooks


# --- DINO ---------------------------------------------------------------------------------------------------


def dino_batch(sizes: Sizes, num_local_crops: int | None = None) -> dict:
    local = sizes.num_local_crops if num_local_crops is None else num_local_crops
    batch = {"global_views": torch.randn(2, sizes.batch_size, 3, sizes.global_size, sizes.global_size)}
    if local:
        batch["local_views"] = torch.randn(local, sizes.batch_size, 3, sizes.local_size, sizes.local_size)
    return batch


def dino_ours(sizes: Sizes, batch: dict) -> TrainStep:
    hidden, bottleneck, prototypes = sizes.dino_head
    config = DinoConfig(
        backbone_config=vit_config(sizes, sizes.global_size), head_hidden_dim=hidden,
        head_bottleneck_dim=bottleneck, head_out_dim=prototypes,
    )  # fmt: skip
    model = DinoForPreTraining(config)
    return TrainStep(model, lambda: model(**batch).loss, **ours_hooks(model))


class LightlyDINO(nn.Module):
    """lightly's DINO example: student and teacher backbone + `DINOProjectionHead`; the teacher follows by EMA."""

    def __init__(self, backbone: nn.Module, feature_dim: int, head: tuple[int, int, int]):
        super().__init__()
        hidden, bottleneck, prototypes = head
        self.student_backbone = backbone
        self.student_head = DINOProjectionHead(feature_dim, hidden, bottleneck, prototypes, freeze_last_layer=1)
        self.teacher_backbone = copy.deepcopy(backbone)
        self.teacher_head = DINOProjectionHead(feature_dim, hidden, bottleneck, prototypes)
        lightly_utils.deactivate_requires_grad(self.teacher_backbone)
        lightly_utils.deactivate_requires_grad(self.teacher_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student_head(self.student_backbone(x))

    def forward_teacher(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher_head(self.teacher_backbone(x))


def dino_lightly(sizes: Sizes, batch: dict) -> TrainStep:
    backbone = Pooled(SSLViTModel(vit_config(sizes, sizes.global_size)))
    model = LightlyDINO(backbone, sizes.vit["hidden_size"], sizes.dino_head)
    criterion = DINOLoss(output_dim=sizes.dino_head[2], warmup_teacher_temp_epochs=0)
    epoch = PROGRESS.step // PROGRESS.steps_per_epoch
    global_views = list(batch["global_views"])
    views = global_views + list(batch.get("local_views", []))

    def compute_loss():
        teacher_out = [model.forward_teacher(view) for view in global_views]
        student_out = [model(view) for view in views]
        return criterion(teacher_out, student_out, epoch=epoch)

    def update_teacher():
        momentum = cosine_schedule(PROGRESS.step, PROGRESS.total_steps, BASE_MOMENTUM, 1.0)
        lightly_utils.update_momentum(model.student_backbone, model.teacher_backbone, m=momentum)
        lightly_utils.update_momentum(model.student_head, model.teacher_head, m=momentum)

    return TrainStep(
        model, compute_loss, lambda: model.student_head.cancel_last_layer_gradients(current_epoch=epoch), update_teacher
    )


# --- SimCLR and BYOL ----------------------------------------------------------------------------------------


def two_view_batch(sizes: Sizes) -> dict:
    return {"global_views": torch.randn(2, sizes.resnet_batch_size, 3, sizes.resnet_size, sizes.resnet_size)}


def simclr_ours(sizes: Sizes, batch: dict) -> TrainStep:
    hidden, out = sizes.projection
    config = SimCLRConfig(backbone_config=resnet_config(sizes), projection_hidden_dim=hidden, projection_dim=out,
                          projection_last_bn=False, temperature=0.5)  # fmt: skip
    model = SimCLRForPreTraining(config)
    return TrainStep(model, lambda: model(**batch).loss)


def simclr_lightly(sizes: Sizes, batch: dict) -> TrainStep:
    hidden, out = sizes.projection
    backbone = Pooled(SSLResNetModel(resnet_config(sizes)))
    model = nn.Sequential(backbone, SimCLRProjectionHead(feature_dim(backbone.backbone.config), hidden, out))
    criterion = NTXentLoss(temperature=0.5)
    x0, x1 = batch["global_views"]
    return TrainStep(model, lambda: criterion(model(x0), model(x1)))


def byol_ours(sizes: Sizes, batch: dict) -> TrainStep:
    hidden, out = sizes.projection
    config = BYOLConfig(backbone_config=resnet_config(sizes), projection_hidden_dim=hidden, projection_dim=out,
                        prediction_hidden_dim=hidden, momentum=BASE_MOMENTUM)  # fmt: skip
    model = BYOLForPreTraining(config)
    return TrainStep(model, lambda: model(**batch).loss, **ours_hooks(model))


class LightlyBYOL(nn.Module):
    """lightly's BYOL example: backbone, projection and prediction heads, EMA copies of backbone and projection."""

    def __init__(self, backbone: nn.Module, feature_dim: int, hidden: int, out: int):
        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(feature_dim, hidden, out)
        self.prediction_head = BYOLPredictionHead(out, hidden, out)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        lightly_utils.deactivate_requires_grad(self.backbone_momentum)
        lightly_utils.deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x)))

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x)).detach()


def byol_lightly(sizes: Sizes, batch: dict) -> TrainStep:
    hidden, out = sizes.projection
    backbone = Pooled(SSLResNetModel(resnet_config(sizes)))
    model = LightlyBYOL(backbone, feature_dim(backbone.backbone.config), hidden, out)
    criterion = NegativeCosineSimilarity()
    x0, x1 = batch["global_views"]

    def compute_loss():
        p0, z0 = model(x0), model.forward_momentum(x0)
        p1, z1 = model(x1), model.forward_momentum(x1)
        return 0.5 * (criterion(p0, z1) + criterion(p1, z0))

    def update_target():
        momentum = cosine_schedule(PROGRESS.step, PROGRESS.total_steps, BASE_MOMENTUM, 1.0)
        lightly_utils.update_momentum(model.backbone, model.backbone_momentum, m=momentum)
        lightly_utils.update_momentum(model.projection_head, model.projection_head_momentum, m=momentum)

    return TrainStep(model, compute_loss, after_optimizer=update_target)


# --- MAE ----------------------------------------------------------------------------------------------------


def mae_batch(sizes: Sizes) -> dict:
    return {"global_views": torch.randn(1, sizes.mae_batch_size, 3, sizes.mae_size, sizes.mae_size)}


def mae_ours(sizes: Sizes, batch: dict, mask_ratio: float | None = None) -> TrainStep:
    width, depth, heads = sizes.decoder
    config = MaeConfig(
        backbone_config=vit_config(sizes, sizes.mae_size, position_embedding_type="sincos", pooling="mean"),
        mask_ratio=sizes.mask_ratio if mask_ratio is None else mask_ratio, norm_pix_loss=False,
        decoder_hidden_size=width, decoder_num_hidden_layers=depth, decoder_num_attention_heads=heads,
    )  # fmt: skip
    model = MaeForPreTraining(config)
    return TrainStep(model, lambda: model(**batch).loss)


def mae_transformers(sizes: Sizes, batch: dict) -> TrainStep:
    width, depth, heads = sizes.decoder
    vit = sizes.vit
    config = ViTMAEConfig(
        hidden_size=vit["hidden_size"], num_hidden_layers=vit["num_hidden_layers"],
        num_attention_heads=vit["num_attention_heads"], intermediate_size=4 * vit["hidden_size"],
        image_size=sizes.mae_size, patch_size=vit["patch_size"], layer_norm_eps=1e-6, decoder_hidden_size=width,
        decoder_num_hidden_layers=depth, decoder_num_attention_heads=heads, decoder_intermediate_size=4 * width,
        mask_ratio=sizes.mask_ratio, norm_pix_loss=False, attn_implementation="sdpa",
    )  # fmt: skip
    model = ViTMAEForPreTraining(config)
    pixel_values = batch["global_views"].flatten(0, 1)
    return TrainStep(model, lambda: model(pixel_values=pixel_values).loss)


class LightlyMAE(nn.Module):
    """lightly's MAE example (timm flavour): masked timm ViT encoder, `MAEDecoderTIMM`, loss on the masked patches."""

    def __init__(self, vit: timm.models.VisionTransformer, decoder: tuple[int, int, int], mask_ratio: float):
        super().__init__()
        width, depth, heads = decoder
        self.mask_ratio = mask_ratio
        self.patch_size = vit.patch_embed.patch_size[0]
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)
        self.sequence_length = self.backbone.sequence_length
        self.decoder = MAEDecoderTIMM(
            num_patches=vit.patch_embed.num_patches, patch_size=self.patch_size, embed_dim=vit.embed_dim,
            decoder_embed_dim=width, decoder_depth=depth, decoder_num_heads=heads, mlp_ratio=4.0,
        )  # fmt: skip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch_size = images.shape[0]
        idx_keep, idx_mask = lightly_utils.random_token_mask(
            size=(batch_size, self.sequence_length), mask_ratio=self.mask_ratio, device=images.device
        )
        encoded = self.backbone.encode(images=images, idx_keep=idx_keep)
        tokens = lightly_utils.repeat_token(self.decoder.mask_token, (batch_size, self.sequence_length))
        tokens = lightly_utils.set_at_index(tokens, idx_keep, self.decoder.embed(encoded).type_as(tokens))
        predictions = self.decoder.predict(lightly_utils.get_at_index(self.decoder.decode(tokens), idx_mask))
        target = lightly_utils.get_at_index(lightly_utils.patchify(images, self.patch_size), idx_mask - 1)
        return F.mse_loss(predictions, target)


def mae_lightly(sizes: Sizes, batch: dict) -> TrainStep:
    vit = timm.models.VisionTransformer(
        img_size=sizes.mae_size, patch_size=sizes.vit["patch_size"], embed_dim=sizes.vit["hidden_size"],
        depth=sizes.vit["num_hidden_layers"], num_heads=sizes.vit["num_attention_heads"], num_classes=0,
    )  # fmt: skip
    model = LightlyMAE(vit, sizes.decoder, sizes.mask_ratio)
    pixel_values = batch["global_views"].flatten(0, 1)
    return TrainStep(model, lambda: model(pixel_values))


# --- the benchmark ------------------------------------------------------------------------------------------


def compare(title: str, steps: dict[str, TrainStep], images_per_step: int, rounds: int) -> None:
    """Time the steps (ours first) in interleaved rounds, measure each one's peak memory, print the table."""
    times = interleave(steps, rounds)
    phases = {name: step.median_phases(rounds) for name, step in steps.items()}
    memory = {name: peak_memory(step) for name, step in steps.items()} if exact_rss_available() else {}
    ours = median_wall(next(iter(times.values())))
    rows = []
    for name in steps:
        seconds = median_wall(times[name])
        forward, backward, rest = phases[name]
        mib = f"{memory[name] / 2**20:.1f}" if name in memory else "n/a"
        rows.append([name, 1000 * seconds, 1000 * forward, 1000 * backward, 1000 * rest,
                     images_per_step / seconds, ratio(seconds, ours), mib])  # fmt: skip
    header = ["implementation", "ms/step", "forward ms", "backward ms", "opt+EMA ms", "images/s", "ours/this (x)",
              "peak MiB"]  # fmt: skip
    print_table(title, header, rows)


def main(argv=None):
    parser = base_parser(__doc__)
    parser.add_argument("--methods", nargs="+", default=["dino", "simclr", "byol", "mae"],
                        choices=["dino", "simclr", "byol", "mae"])  # fmt: skip
    args = parser.parse_args(argv)
    rounds = setup(args, default_rounds=4)
    sizes = QUICK if args.quick else DEFAULT
    vit = sizes.vit
    vit_name = f"ViT {vit['hidden_size']}-d x {vit['num_hidden_layers']}, patch {vit['patch_size']}"
    print(machine_line(args))
    print(f"pretraining step, fp32, AdamW, median of {rounds} interleaved rounds")
    if "dino" in args.methods:
        batch = dino_batch(sizes)
        steps = {"ours DinoForPreTraining": dino_ours(sizes, batch), "lightly DINO example": dino_lightly(sizes, batch)}
        crops = f"2x{sizes.global_size} + {sizes.num_local_crops}x{sizes.local_size} px"
        title = f"DINO, {vit_name}, {crops}, batch {sizes.batch_size}, head {sizes.dino_head}"
        compare(title, steps, sizes.batch_size, rounds)
    if "simclr" in args.methods:
        batch = two_view_batch(sizes)
        steps = {"ours SimCLRForPreTraining": simclr_ours(sizes, batch),
                 "lightly SimCLR example": simclr_lightly(sizes, batch)}  # fmt: skip
        title = f"SimCLR, ResNet-{sizes.resnet_depth}, 2x{sizes.resnet_size} px, batch {sizes.resnet_batch_size}"
        compare(title, steps, sizes.resnet_batch_size, rounds)
    if "byol" in args.methods:
        batch = two_view_batch(sizes)
        steps = {"ours BYOLForPreTraining": byol_ours(sizes, batch), "lightly BYOL example": byol_lightly(sizes, batch)}
        title = f"BYOL, ResNet-{sizes.resnet_depth}, 2x{sizes.resnet_size} px, batch {sizes.resnet_batch_size}"
        compare(title, steps, sizes.resnet_batch_size, rounds)
    if "mae" in args.methods:
        batch = mae_batch(sizes)
        steps = {"ours MaeForPreTraining": mae_ours(sizes, batch),
                 "transformers ViTMAEForPreTraining": mae_transformers(sizes, batch),
                 "lightly MAE example (timm ViT)": mae_lightly(sizes, batch)}  # fmt: skip
        width, depth, heads = sizes.decoder
        title = (f"MAE, {vit_name}, {sizes.mae_size} px, mask {sizes.mask_ratio}, decoder {width}-d x {depth}, "
                 f"batch {sizes.mae_batch_size}")  # fmt: skip
        compare(title, steps, sizes.mae_batch_size, rounds)


if __name__ == "__main__":
    main()
