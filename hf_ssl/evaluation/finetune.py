"""Full fine-tuning with `transformers.Trainer` on `AutoModelForImageClassification`: any hf_ssl checkpoint (the
`model/` folder the engine writes) and any `transformers` vision model (e.g. a `Dinov2Model` saved locally).

    hf-ssl eval finetune --model ./runs/dino/model --dataset fashion_mnist --output-dir ./dino-fmnist \
        --epochs 3 --lr 5e-4 --layer-decay 0.65

The same thing in plain Python, with nothing from hf_ssl but the registration that `import hf_ssl` does:

    import numpy as np
    import torch
    from datasets import load_dataset
    from transformers import (AutoImageProcessor, AutoModelForImageClassification, Trainer,
                              TrainingArguments)

    import hf_ssl  # registers the hf_ssl model types with the Auto classes

    data = load_dataset("imagefolder", data_dir="./my_images")  # subfolders are the classes
    labels = data["train"].features["label"].names
    processor = AutoImageProcessor.from_pretrained("./runs/dino/model")
    model = AutoModelForImageClassification.from_pretrained(
        "./runs/dino/model", num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}, ignore_mismatched_sizes=True,
    )

    def transform(batch):  # decoded images -> pixel_values, applied lazily per batch
        pixels = processor([image.convert("RGB") for image in batch["image"]], return_tensors="pt")
        return {"pixel_values": pixels["pixel_values"], "labels": batch["label"]}

    def collate(rows):
        return {"pixel_values": torch.stack([row["pixel_values"] for row in rows]),
                "labels": torch.tensor([row["labels"] for row in rows])}

    def accuracy(prediction):
        return {"accuracy": float(np.mean(prediction.predictions.argmax(-1) == prediction.label_ids))}

    args = TrainingArguments(
        "./dino-finetuned", per_device_train_batch_size=32, num_train_epochs=3, learning_rate=5e-4,
        weight_decay=0.05, warmup_steps=0.1, lr_scheduler_type="cosine",  # v5: a float warmup_steps is a ratio
        remove_unused_columns=False,  # keep the image column for the transform
        use_cpu=not torch.cuda.is_available(), report_to="none",
    )
    trainer = Trainer(
        model=model, args=args, data_collator=collate, processing_class=processor, compute_metrics=accuracy,
        train_dataset=data["train"].with_transform(transform), eval_dataset=data["test"].with_transform(transform),
    )
    trainer.train()
    trainer.save_model()  # weights, config and the image processor
    print(trainer.evaluate())

`layerwise_param_groups` adds the layer-wise learning-rate decay of BEiT/MAE fine-tuning: block i of L gets
lr * decay^(L + 1 - i) (the embeddings i = 0, the final norm and the classifier i = L + 1); pass
`torch.optim.AdamW(layerwise_param_groups(model, lr, weight_decay, decay))` to `Trainer(optimizers=(optimizer, None))`.
"""

import os
import re

import numpy as np
import torch
from torch import nn

_BLOCK_INDEX = re.compile(r"(?:^|\.)(?:layers?|blocks)\.(\d+)\.")
_EMBEDDING = re.compile(r"embed|cls_token|mask_token|reg(?:ister)?_tokens?")


def _layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """`({parameter name: layer id}, L)`: embeddings 0, transformer block i -> i + 1, everything else L + 1."""
    names = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    blocks = {name: int(match.group(1)) for name in names if (match := _BLOCK_INDEX.search(name))}
    if not blocks:
        raise ValueError(
            f"layer-wise learning-rate decay needs numbered transformer blocks (`layers.i.`, `layer.i.`, `blocks.i.`); "
            f"{type(model).__name__} has none"
        )
    num_layers = max(blocks.values()) + 1
    ids = {}
    for name in names:
        if name in blocks:
            ids[name] = blocks[name] + 1
        elif _EMBEDDING.search(name):
            ids[name] = 0
        else:
            ids[name] = num_layers + 1
    return ids, num_layers


def _no_weight_decay(name: str, parameter: nn.Parameter) -> bool:
    """Biases, norm and LayerScale weights (1-d) and the learned tokens / position embeddings are not decayed."""
    return parameter.ndim <= 1 or bool(re.search(r"token|position_embeddings|pos_embed", name))


def layerwise_param_groups(
    model: nn.Module, lr: float, weight_decay: float = 0.05, layer_decay: float = 0.75
) -> list[dict]:
    """Optimizer parameter groups with layer-wise learning-rate decay (one group per layer and decay setting).

    Each group holds `params`, `lr` (= lr * layer_decay^(L + 1 - layer id)), `weight_decay` and, for inspection,
    `layer_id` and `lr_scale`.
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    ids, num_layers = _layer_ids(model)
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if name not in ids:
            continue
        layer_id, decay = ids[name], not _no_weight_decay(name, parameter)
        scale = layer_decay ** (num_layers + 1 - layer_id)
        group = groups.setdefault(
            (layer_id, decay),
            {"params": [], "lr": lr * scale, "lr_scale": scale, "weight_decay": weight_decay if decay else 0.0,
             "layer_id": layer_id},
        )  # fmt: skip
        group["params"].append(parameter)
    return [groups[key] for key in sorted(groups)]


def _pil(value):
    """A dataset image cell (PIL image, path, bytes or uint8 array) as a PIL image."""
    from torchvision.transforms.v2.functional import to_pil_image

    from ..data.datasets import decode_image

    image = decode_image(value)
    return image if not isinstance(image, torch.Tensor) else to_pil_image(image)


def image_transform(processor, augment: bool = False):
    """A `datasets.with_transform` function: image cells -> `pixel_values` with `processor` (after a random
    horizontal flip when `augment`), `label` -> `labels`."""
    from torchvision.transforms.v2 import RandomHorizontalFlip

    flip = RandomHorizontalFlip() if augment else None

    def transform(batch):
        images = [_pil(value) for value in batch["image"]]
        if flip is not None:
            images = [flip(image) for image in images]
        output = {"pixel_values": processor(images, return_tensors="pt")["pixel_values"]}
        if "label" in batch:
            output["labels"] = batch["label"]
        return output

    return transform


def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Stack per-row `pixel_values` and `labels` into a batch."""
    batch = {"pixel_values": torch.stack([row["pixel_values"] for row in rows])}
    if "labels" in rows[0]:
        batch["labels"] = torch.tensor([int(row["labels"]) for row in rows])
    return batch


def accuracy(prediction) -> dict[str, float]:
    """`compute_metrics` for `Trainer`: top-1 accuracy of the logits."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return {"accuracy": float(np.mean(np.argmax(logits, axis=-1) == prediction.label_ids))}


def _split(dataset: str, split: str, limit: int | None):
    from ..data.datasets import load_dataset_for_pretraining

    data = load_dataset_for_pretraining(dataset, split=split)
    if "label" not in data.column_names:
        raise ValueError(f"fine-tuning needs integer labels; dataset {dataset!r} has columns {data.column_names}")
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    return data


def _label_names(data) -> list[str]:
    import datasets

    feature = data.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    return [str(label) for label in range(int(max(data["label"])) + 1)]


def build_trainer(
    model: str | os.PathLike,
    dataset: str,
    output_dir: str | os.PathLike,
    train_split: str = "train",
    test_split: str | None = "test",
    epochs: float = 3.0,
    max_steps: int = -1,
    lr: float = 5e-4,
    batch_size: int = 32,
    weight_decay: float = 0.05,
    layer_decay: float | None = None,
    warmup_steps: float = 0.0,
    max_train: int | None = None,
    max_test: int | None = None,
    augment: bool = True,
    logging_steps: int = 10,
    seed: int = 0,
):
    """A ready-to-train `transformers.Trainer`: `AutoModelForImageClassification` from `model` with a new head for
    the dataset's classes, its image processor (or `processor_for`), lazily transformed splits, AdamW with a cosine
    schedule, and layer-wise learning-rate decay when `layer_decay` is set."""
    from transformers import AutoConfig, AutoModelForImageClassification, Trainer, TrainingArguments

    from .extract import load_image_processor

    train_data = _split(dataset, train_split, max_train)
    test_data = _split(dataset, test_split, max_test) if test_split else None
    names = _label_names(train_data)
    processor = load_image_processor(model, AutoConfig.from_pretrained(model))
    classifier = AutoModelForImageClassification.from_pretrained(
        model, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
        ignore_mismatched_sizes=True,
    )  # fmt: skip
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        num_train_epochs=epochs,
        max_steps=max_steps,
        learning_rate=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        lr_scheduler_type="cosine",
        logging_steps=logging_steps,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
    )
    optimizer = None
    if layer_decay is not None:
        optimizer = torch.optim.AdamW(layerwise_param_groups(classifier, lr, weight_decay, layer_decay), lr=lr)
    return Trainer(
        model=classifier,
        args=args,
        data_collator=collate,
        train_dataset=train_data.with_transform(image_transform(processor, augment)),
        eval_dataset=test_data.with_transform(image_transform(processor)) if test_data is not None else None,
        processing_class=processor,
        compute_metrics=accuracy,
        optimizers=(optimizer, None),
    )


def finetune(model: str | os.PathLike, dataset: str, output_dir: str | os.PathLike, **kwargs) -> dict:
    """Fine-tune (see `build_trainer` for the options), save the model and its processor to `output_dir`, and
    evaluate on the test split. Returns `{"train": train metrics, "eval": test metrics, "log_history": [...]}`."""
    trainer = build_trainer(model, dataset, output_dir, **kwargs)
    train_output = trainer.train()
    trainer.save_model(str(output_dir))
    results = {"train": train_output.metrics, "eval": {}, "log_history": trainer.state.log_history}
    if trainer.eval_dataset is not None:
        results["eval"] = trainer.evaluate()
    return results
