"""The pretraining engine: one accelerate loop for every method.

It knows nothing about any method. From a recipe it builds the config (`AutoConfig.for_model`), the pretraining
model (`AutoModelForPreTraining`), the views transform and the dataset; then every optimizer step it sets the
learning rate and weight decay of each parameter group from the schedules, back-propagates `model(**batch).loss`
(with gradient accumulation), clips, calls the model's optional hooks `on_before_optimizer_step(progress)` and
`on_step_end(progress)` around `optimizer.step()`, and every so often logs, checks health and checkpoints.

Exact resume: each epoch's order is a permutation drawn from (seed, epoch), each batch's augmentations run under RNGs
seeded from (seed, epoch, batch, process) whether the main process or a worker computes them, and model-side
randomness (dropout, drop-path) comes from the process RNG, which checkpoints save. A run interrupted after a
checkpoint and resumed ends with the same weights as an uninterrupted one (bit for bit on CPU).
"""

import json
import math
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedDataParallelKwargs, send_to_device, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoModelForPreTraining

from ..data.datasets import SSLDataset, load_dataset_for_pretraining
from ..processing.image_processing import CROP_RATIO, processor_for
from ..processing.views import build_views, collate_views
from .checkpoint import latest_checkpoint, load_checkpoint, remove_incomplete, save_checkpoint
from .monitors import NonFiniteGuard, collapse_metrics
from .optim import build_optimizer
from .progress import TrainingProgress
from .recipe import Recipe, load_recipe
from .schedules import cosine_with_warmup, scaled_lr

logger = get_logger(__name__)  # logs from the main process only


def _derive_seed(*values: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence), so nearby inputs give unrelated seeds."""
    return int(np.random.SeedSequence(list(values)).generate_state(1, np.uint64)[0] >> 1)


@contextmanager
def single_thread():
    """Run per-image augmentation on one thread: its many tiny ops only pay thread start-up and synchronisation when
    spread over several (DataLoader workers already run single-threaded; this covers `num_workers=0`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class SeededBatches(torch.utils.data.Dataset):
    """A map-style dataset read by batches of keys `(seed, index)` (one seed per batch): the batch is computed under
    torch, numpy and Python RNGs seeded by that seed, and the caller's RNG states are restored afterwards, so a
    batch's augmentations depend only on its seed, whichever process or worker computes it. Uses the dataset's
    `__getitems__` when it has one."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list:
        seed, indices = keys[0][0], [index for _, index in keys]
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]), single_thread():
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            try:
                if hasattr(self.dataset, "__getitems__"):
                    return self.dataset.__getitems__(indices)
                return [self.dataset[index] for index in indices]
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)


class RunBatchSampler(torch.utils.data.Sampler):
    """This process's batches of `(batch seed, index)` for a whole run, from micro-batch `start` to `end`.

    Micro-batch `n` belongs to epoch `n // batches_per_epoch`. An epoch's order is `randperm(num_samples)` seeded
    from (seed, epoch); its global batch `b` is the slice `[b * B * P, (b + 1) * B * P)` (B per process, P
    processes), of which process `r` takes the `r`-th chunk of B, so processes never share a sample and the rest of
    the epoch is dropped. The batch seed is derived from (seed, epoch, b, r). One sampler for the whole run lets a
    single DataLoader (and its workers) run across epoch boundaries.
    """

    def __init__(self, num_samples: int, batch_size: int, batches_per_epoch: int, seed: int, start: int, end: int,
                 num_processes: int = 1, process_index: int = 0):  # fmt: skip
        if batches_per_epoch * batch_size * num_processes > num_samples:
            raise ValueError(
                f"{batches_per_epoch} batches of {batch_size} x {num_processes} processes need more than "
                f"{num_samples} samples"
            )
        self.num_samples, self.batch_size, self.batches_per_epoch = num_samples, batch_size, batches_per_epoch
        self.seed, self.start, self.end = seed, start, end
        self.num_processes, self.process_index = num_processes, process_index

    def __len__(self) -> int:
        return max(self.end - self.start, 0)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(_derive_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self):
        order, order_epoch = None, None
        for micro_batch in range(self.start, self.end):
            epoch, batch = divmod(micro_batch, self.batches_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = self.epoch_order(epoch), epoch
            first = (batch * self.num_processes + self.process_index) * self.batch_size
            seed = _derive_seed(self.seed, epoch, batch, self.process_index)
            yield [(seed, index) for index in order[first : first + self.batch_size].tolist()]


def build_model(recipe: Recipe):
    """The pretraining model of `recipe.model`, randomly initialised."""
    return AutoModelForPreTraining.from_config(recipe.build_config())


def build_dataset(recipe: Recipe):
    """(map-style dataset of `(views, label)` samples, views transform) for `recipe.data` and `recipe.views`."""
    data = recipe.data
    if data.streaming:
        raise ValueError(
            "data.streaming=true is not supported by the engine: exact resume needs a map-style dataset "
            "(load it with streaming=false, or save_to_disk a subset first)"
        )
    views = build_views(**recipe.views)
    images = load_dataset_for_pretraining(data.dataset, split=data.split, image_column=data.image_column)
    if data.max_samples is not None and data.max_samples < len(images):
        images = images.select(range(data.max_samples))
    return SSLDataset(images, views), views


def build_schedules(recipe: Recipe, global_batch_size: int, total_steps: int, steps_per_epoch: int):
    """Per-step (learning rate, weight decay) arrays: the lr scaled to the global batch, warm-up then cosine to
    `min_lr`; the weight decay cosine from `weight_decay` to `weight_decay_end` (constant when that is null)."""
    optim = recipe.optim
    lr = scaled_lr(optim.lr, global_batch_size, optim.base_batch_size, optim.lr_scaling)
    warmup = optim.warmup_steps if optim.warmup_steps is not None else round(optim.warmup_epochs * steps_per_epoch)
    if warmup > total_steps:
        logger.warning("the warm-up (%d steps) is longer than the run (%d steps): shortened", warmup, total_steps)
        warmup = total_steps
    wd_end = optim.weight_decay if optim.weight_decay_end is None else optim.weight_decay_end
    return (
        cosine_with_warmup(lr, optim.min_lr, total_steps, warmup),
        cosine_with_warmup(optim.weight_decay, wd_end, total_steps),
    )


def _make_accelerator(recipe: Recipe) -> Accelerator:
    log_with = recipe.train.log_with
    if log_with == "auto":
        try:
            import tensorboard  # noqa: F401

            log_with = "tensorboard"
        except ImportError:
            log_with = None
    accelerator = Accelerator(
        mixed_precision=recipe.train.mixed_precision,
        gradient_accumulation_steps=recipe.train.gradient_accumulation_steps,
        log_with=None if log_with in (None, "none") else log_with,
        project_dir=recipe.train.output_dir,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=recipe.train.find_unused_parameters)],
    )
    world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if world_size != accelerator.num_processes:
        # e.g. accelerate's FSDP plugin on CPU processes: each would silently train alone on its own shard
        raise RuntimeError(
            f"{world_size} processes were launched but accelerate runs {accelerator.num_processes} "
            f"({accelerator.distributed_type}); this launch configuration is not supported on this hardware"
        )
    return accelerator


def _flat(values: dict, prefix: str = "") -> dict:
    """A nested dict as flat scalars (the trackers' hyper-parameter tables)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


class Trainer:
    """One pretraining run of a recipe; `train()` is the function to call."""

    def __init__(self, recipe: Recipe):
        recipe.validate()
        self.recipe, self.cfg = recipe, recipe.train
        self.output_dir = Path(self.cfg.output_dir)
        self.accelerator = accelerator = _make_accelerator(recipe)
        self.batch_size = recipe.per_process_batch_size(accelerator.num_processes)
        self.accum = self.cfg.gradient_accumulation_steps
        self.global_batch_size = self.batch_size * accelerator.num_processes * self.accum

        set_seed(self.cfg.seed)  # the same initial weights on every process
        model = build_model(recipe)
        self.dataset, self.views = build_dataset(recipe)
        self.steps_per_epoch = len(self.dataset) // (self.batch_size * accelerator.num_processes * self.accum)
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the dataset has {len(self.dataset)} images, fewer than one global batch of {self.global_batch_size}"
                " (train.batch_size x processes x gradient_accumulation_steps): lower train.batch_size"
            )
        self.total_steps = self.cfg.max_steps or math.ceil(self.cfg.epochs * self.steps_per_epoch)
        self.lr_schedule, self.wd_schedule = build_schedules(
            recipe, self.global_batch_size, self.total_steps, self.steps_per_epoch
        )
        if self.cfg.sync_batchnorm and accelerator.num_processes > 1:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        optim = recipe.optim
        optimizer = build_optimizer(
            model, optim.optimizer, lr=float(self.lr_schedule[0]), weight_decay=float(self.wd_schedule[0]),
            betas=tuple(optim.betas), eps=optim.eps, momentum=optim.momentum,
            trust_coefficient=optim.trust_coefficient, layer_decay=optim.layer_decay,
            patch_embed_lr_mult=optim.patch_embed_lr_mult,
        )  # fmt: skip
        self.core = model  # unwrapped: hooks, state dicts, save_pretrained
        if self.cfg.compile:
            model = torch.compile(model)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        set_seed(self.cfg.seed, device_specific=True)  # per-process model randomness (drop-path) from here on
        self.params = [p for p in self.core.parameters() if p.requires_grad]
        self.max_grad_norm = optim.clip_grad or float("inf")
        self.guard = NonFiniteGuard(accelerator.device)
        self.step, self.skipped_nonfinite, self.skipped_images = 0, 0, 0
        self.checkpoint: Path | None = None
        self.metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.fresh_monitors: dict[str, float] = {}  # monitors of this step, for the history entry of a log step

    # --- checkpoints -----------------------------------------------------------------------------------------------

    def resume(self, resume: bool | str | Path) -> None:
        """Restore the newest checkpoint of the output dir (`True`) or the one at `resume` (a path)."""
        checkpoint = latest_checkpoint(self.output_dir) if resume is True else Path(resume)
        if checkpoint is None:
            logger.warning("resume requested but %s has no checkpoint: starting from scratch", self.output_dir)
            return
        state = load_checkpoint(checkpoint, self.core, self.optimizer, self.accelerator)
        if (state["steps_per_epoch"], state["batch_size"]) != (self.steps_per_epoch, self.batch_size):
            raise ValueError(
                f"checkpoint {checkpoint} was trained with {state['steps_per_epoch']} steps per epoch and batch size "
                f"{state['batch_size']}, this run has {self.steps_per_epoch} and {self.batch_size}: its data order "
                "cannot be continued"
            )
        self.step, self.skipped_nonfinite = state["step"], state["skipped_nonfinite"]
        self.skipped_images, self.checkpoint = state["skipped_images"], checkpoint
        logger.info("resumed from %s at step %d", checkpoint, self.step)

    def trim_metrics_log(self) -> None:
        """Drop the `metrics.jsonl` lines of steps after `self.step` (left by the interrupted or earlier run this one
        continues or replaces), so the log holds each step once."""
        path = self.output_dir / "metrics.jsonl"
        if not self.accelerator.is_main_process or not path.exists():
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= self.step]
        path.write_text("".join(line + "\n" for line in kept))

    def save_checkpoint(self) -> None:
        self.guard.check(self.accelerator.gather)  # never checkpoint weights updated from a non-finite step
        state = {
            "epoch": self.step // self.steps_per_epoch,
            "batch_in_epoch": (self.step % self.steps_per_epoch) * self.accum,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "batch_size": self.batch_size,
            "skipped_nonfinite": self.skipped_nonfinite,
            "skipped_images": self.skipped_images,
            "seed": self.cfg.seed,
        }
        self.checkpoint = save_checkpoint(
            self.output_dir, self.step, self.core, self.optimizer, state, self.accelerator, self.cfg.keep_last
        )

    # --- the loop --------------------------------------------------------------------------------------------------

    def data_loader(self) -> DataLoader:
        """Every remaining micro-batch of the run, continuing exactly where `self.step` is."""
        sampler = RunBatchSampler(
            len(self.dataset), self.batch_size, self.steps_per_epoch * self.accum, self.cfg.seed,
            start=self.step * self.accum, end=self.total_steps * self.accum,
            num_processes=self.accelerator.num_processes, process_index=self.accelerator.process_index,
        )  # fmt: skip
        return DataLoader(
            SeededBatches(self.dataset), batch_sampler=sampler, collate_fn=collate_views,
            num_workers=self.recipe.data.num_workers, pin_memory=self.accelerator.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.cfg.seed),  # keeps the global RNG untouched
        )  # fmt: skip

    def optimizer_step(self, step_loss: torch.Tensor) -> None:
        """Schedules, clipping, the non-finite guard, the model's hooks and the update, for step `self.step`."""
        progress = TrainingProgress(self.step, self.total_steps, self.steps_per_epoch)
        lr, wd = float(self.lr_schedule[self.step]), float(self.wd_schedule[self.step])
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
            group["weight_decay"] = wd if group["apply_wd"] else 0.0
        grad_norm = self.accelerator.clip_grad_norm_(self.params, self.max_grad_norm)
        # Under an fp16 loss scaler, overflowing gradients are the scaler's to skip: only the loss is guarded.
        kind = NonFiniteGuard.classify(step_loss, None if self.accelerator.scaler is not None else grad_norm)
        if self.cfg.allow_nonfinite_skip and kind.item():  # opt-in: one host sync per step
            self.skipped_nonfinite += 1
            logger.warning("%s: step skipped (%d so far)", NonFiniteGuard.describe(kind.item(), self.step + 1),
                           self.skipped_nonfinite)  # fmt: skip
            self.optimizer.zero_grad(set_to_none=True)
            return
        self.guard.record(self.step + 1, kind)
        self._call_hook("on_before_optimizer_step", progress)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._call_hook("on_step_end", progress)

    def _call_hook(self, name: str, progress: TrainingProgress) -> None:
        hook = getattr(self.core, name, None)
        if hook is not None:
            hook(progress)

    def log(self, output, window_loss: torch.Tensor, window_steps: int, window_skipped: torch.Tensor,
            elapsed: float) -> None:  # fmt: skip
        """Mean loss since the last log, the model's `logs`, lr, wd, images/s: one host sync."""
        self.guard.check(self.accelerator.gather)
        device = self.accelerator.device
        logs = output.logs or {}
        values = torch.stack(
            [window_loss / (window_steps * self.accum)]
            + [torch.as_tensor(value, dtype=torch.float32, device=device).reshape(()) for value in logs.values()]
        )
        loss, *log_values = values.tolist()
        self.skipped_images += int(self.accelerator.reduce(window_skipped.to(device), "sum"))
        values = {
            "loss": loss, **dict(zip(logs, log_values)), "lr": float(self.lr_schedule[self.step - 1]),
            "weight_decay": float(self.wd_schedule[self.step - 1]), "epoch": self.step / self.steps_per_epoch,
            "images_per_second": window_steps * self.global_batch_size / max(elapsed, 1e-9),
        }  # fmt: skip
        self.accelerator.log(values, step=self.step)
        self.metrics.update(values)
        entry = {"step": self.step, **values, **self.fresh_monitors}
        self.history.append(entry)
        self.fresh_monitors = {}
        if self.accelerator.is_main_process:  # one JSON line per log step: the curves figure reads it
            with open(self.output_dir / "metrics.jsonl", "a") as file:
                file.write(json.dumps(entry) + "\n")

    def monitor(self, embeddings: torch.Tensor) -> None:
        """Collapse signals (embedding std, RankMe) of the last batch's embeddings, gathered over processes."""
        embeddings = self.accelerator.gather(embeddings.detach().contiguous())
        if not self.accelerator.is_main_process:
            return
        monitors = collapse_metrics(embeddings, self.step)
        self.accelerator.log(monitors, step=self.step)
        self.metrics.update(monitors)
        self.fresh_monitors = monitors

    def run(self) -> None:
        accelerator, cfg, device = self.accelerator, self.cfg, self.accelerator.device
        bar = tqdm(total=self.total_steps, initial=self.step, desc="pretrain", dynamic_ncols=True,
                   disable=not (accelerator.is_main_process and cfg.progress_bar))  # fmt: skip
        step_loss, window_loss = torch.zeros((), device=device), torch.zeros((), device=device)
        window_skipped, window_steps, window_start = torch.zeros((), dtype=torch.long), 0, time.perf_counter()
        self.model.train()
        for batch in self.data_loader():
            window_skipped += batch.pop("num_skipped")
            if "global_views" not in batch:
                raise ValueError(f"no image of a batch at step {self.step} could be decoded")
            batch = send_to_device(batch, device, non_blocking=True)
            with accelerator.accumulate(self.model):
                output = self.model(**batch)
                accelerator.backward(output.loss)
                step_loss += output.loss.detach()
                if accelerator.sync_gradients:
                    self.optimizer_step(step_loss)
            if not accelerator.sync_gradients:
                continue
            self.step += 1
            window_loss += step_loss
            step_loss = torch.zeros((), device=device)
            window_steps += 1
            bar.update(1)
            if self.step % cfg.monitor_every == 0 and output.embeddings is not None:
                self.monitor(output.embeddings)
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                self.log(output, window_loss, window_steps, window_skipped, time.perf_counter() - window_start)
                bar.set_postfix(loss=f"{self.metrics['loss']:.4f}", lr=f"{self.metrics['lr']:.2e}",
                                img_s=f"{self.metrics['images_per_second']:.0f}")  # fmt: skip
                window_loss = torch.zeros((), device=device)
                window_skipped, window_steps, window_start = torch.zeros((), dtype=torch.long), 0, time.perf_counter()
            if self.step % cfg.checkpoint_every == 0 or self.step == self.total_steps:
                self.save_checkpoint()
        bar.close()
        self.guard.check(accelerator.gather)
        if self.skipped_images:
            logger.warning("%d undecodable images were skipped", self.skipped_images)

    def processor_settings(self) -> dict:
        """What the inference processor takes from training: the views' normalisation and, for backbones without a
        native `image_size` (ResNets), the global crop size (resize to size / 0.875, centre crop)."""
        settings = {}
        if getattr(self.views, "mean", None) is not None:
            settings.update(image_mean=list(self.views.mean), image_std=list(self.views.std))
        backbone = getattr(self.core.config, "backbone_config", None) or self.core.config
        views_config = getattr(self.views, "config", {})
        crop = views_config.get("size", views_config.get("global_crop_size"))
        if not hasattr(backbone, "image_size") and isinstance(crop, int):
            settings.update(size={"shortest_edge": round(crop / CROP_RATIO)}, crop_size={"height": crop, "width": crop})
        return settings

    def save_models(self) -> tuple[Path, Path]:
        """`save_pretrained` of the whole pretraining model and of the evaluated encoder, fp32 safetensors, each with
        the inference image processor matching the training normalisation."""
        pretraining_dir, model_dir = self.output_dir / "pretraining", self.output_dir / "model"
        if self.accelerator.is_main_process:
            self.core.save_pretrained(pretraining_dir)
            getattr(self.core, self.core.base_model_prefix).save_pretrained(model_dir)
            processor = processor_for(self.core.config, **self.processor_settings())
            for directory in (pretraining_dir, model_dir):
                processor.save_pretrained(directory)
        self.accelerator.wait_for_everyone()
        return pretraining_dir, model_dir


def train(recipe: Recipe | str | Path, resume: bool | str | Path = False, overrides: list[str] | None = None) -> dict:
    """Pretrain the model of `recipe` (a `Recipe`, a YAML path or a packaged recipe name, with `overrides`).

    `resume=True` continues from the newest checkpoint in `train.output_dir` (starting fresh if there is none); a
    path continues from that checkpoint. Returns `metrics` (the last logged values), `history` (every log step of
    this call), counters, and the folders written: `pretraining_dir` (the whole model), `model_dir` (the encoder the
    method's paper evaluates, for `AutoModel`), `checkpoint`; plus `knn` when the recipe asks for it.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        raise ValueError("overrides apply to recipe files; set the fields of the Recipe object instead")
    trainer = Trainer(recipe)
    accelerator = trainer.accelerator
    if accelerator.is_main_process:
        trainer.output_dir.mkdir(parents=True, exist_ok=True)
        for path in remove_incomplete(trainer.output_dir):
            logger.warning("removed %s, left by an interrupted checkpoint save", path)
        (trainer.output_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    accelerator.wait_for_everyone()
    if resume:
        trainer.resume(resume)
    trainer.trim_metrics_log()
    if accelerator.log_with:
        accelerator.init_trackers("pretrain", config=_flat(recipe.to_dict()))
    threads = torch.get_num_threads()
    if accelerator.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(min(threads, model_threads(recipe.data.num_workers, accelerator.state.num_processes)))
    try:
        trainer.run()
    finally:
        torch.set_num_threads(threads)
    pretraining_dir, model_dir = trainer.save_models()
    result = {
        "step": trainer.step,
        "metrics": trainer.metrics,
        "history": trainer.history,
        "skipped_nonfinite": trainer.skipped_nonfinite,
        "skipped_images": trainer.skipped_images,
        "output_dir": str(trainer.output_dir),
        "pretraining_dir": str(pretraining_dir),
        "model_dir": str(model_dir),
        "checkpoint": str(trainer.checkpoint) if trainer.checkpoint else None,
    }
    if recipe.eval.knn is not None and accelerator.is_main_process:
        result["knn"] = knn_report(model_dir, dict(recipe.eval.knn))
    accelerator.end_training()
    return result


def model_threads(num_workers: int, num_processes: int = 1) -> int:
    """Threads for a CPU training process: its share of the cores minus its data-loader workers (at least 1).
    torch's default of every core competes with the workers: on 2 cores with 2 workers, 3x slower than 1 thread.
    The engine only ever lowers the thread count to this, and leaves it alone when `OMP_NUM_THREADS` is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(num_processes, 1) - num_workers)


def knn_report(model_dir: Path, options: dict) -> dict:
    """kNN accuracy of the saved encoder (and of the same architecture at random init when `compare_random_init`),
    by `hf_ssl.evaluation.knn.knn_eval`; printed, written to `knn.json` beside `model_dir`, and returned as
    {"trained": ..., "random_init": ...}."""
    from ..evaluation.knn import knn_eval

    options = dict(options)
    compare_random_init = options.pop("compare_random_init", False)
    if "split" in options:
        options["test_split"] = options.pop("split")
    results = {"trained": knn_eval(str(model_dir), **options)}
    if compare_random_init:
        results["random_init"] = knn_eval(str(model_dir), random_init=True, **options)
    for name, scores in results.items():
        for k, accuracy in scores.items():
            print(f"kNN {k} ({name}): top-1 {accuracy['top1']:.2f}%  top-5 {accuracy['top5']:.2f}%")
    (Path(model_dir).parent / "knn.json").write_text(json.dumps(results, indent=2))
    return results
