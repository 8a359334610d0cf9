"""Weighted k-nearest-neighbour evaluation of frozen features, exactly the DINO protocol.

Features are L2-normalised; a test image's k nearest training images (cosine similarity) vote for their label with
weight exp(sim / T). Top-1 and top-5 accuracy of the summed votes are reported.
"""

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores (num_test, num_classes) of the temperature-weighted kNN vote."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if train_features.shape[0] != train_labels.shape[0]:
        raise ValueError(
            f"{train_features.shape[0]} training features but {train_labels.shape[0]} training labels"
        )
    k = min(k, train_features.shape[0])
    train_features = F.normalize(train_features.float(), dim=1)
    test_features = F.normalize(test_features.float(), dim=1)
    scores = []
    for chunk in test_features.split(chunk_size):
        similarity, index = (chunk @ train_features.T).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(chunk.shape[0], num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels[index], weights)
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (in %) of the weighted kNN classifier."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    scores = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    ranked = scores.argsort(dim=1, descending=True)
    correct = ranked == test_labels.unsqueeze(1)
    return {
        "top1": 100.0 * correct[:, :1].any(dim=1).float().mean().item(),
        "top5": 100.0 * correct[:, : min(5, num_classes)].any(dim=1).float().mean().item(),
    }


def _per_channel(values: list[float], num_channels: int) -> torch.Tensor:
    """(1, C, 1, 1) statistics; averaged when the processor's channel count differs from the model's."""
    values = torch.tensor(values, dtype=torch.float32)
    if values.numel() != num_channels:
        values = values.mean().repeat(num_channels)
    return values.view(1, -1, 1, 1)


@torch.no_grad()
def extract_array_features(
    model: torch.nn.Module,
    images: torch.Tensor,
    mean: list[float],
    std: list[float],
    image_size: int,
    batch_size: int = 256,
    desc: str = "features",
) -> torch.Tensor:
    """`pooler_output` of `model` for uint8 images (N, H, W) or (N, C, H, W), resized and normalised like its processor."""
    if images.ndim == 3:
        images = images.unsqueeze(1)
    backbone_config = getattr(model.config, "backbone_config", model.config)
    num_channels = getattr(backbone_config, "num_channels", 3)
    mean_t, std_t = (_per_channel(values, num_channels) for values in (mean, std))
    model.eval()
    features = []
    for batch in tqdm(images.split(batch_size), desc=desc, leave=False):
        pixels = batch.float() / 255.0
        if pixels.shape[-1] != image_size or pixels.shape[-2] != image_size:
            pixels = F.interpolate(pixels, size=(image_size, image_size), mode="bicubic", align_corners=False)
        if pixels.shape[1] != num_channels:
            pixels = pixels.expand(-1, num_channels, -1, -1) if pixels.shape[1] == 1 else pixels.mean(1, keepdim=True)
        pixels = (pixels - mean_t) / std_t
        features.append(model(pixel_values=pixels).pooler_output.float())
    return torch.cat(features)


def _labelled_split(dataset: str, split: str, limit: int | None):
    """(images, labels) of a labelled split: uint8 tensors for the builtin Fashion-MNIST, else a `datasets` split."""
    from ..data.datasets import fashion_mnist_arrays, load_dataset_for_pretraining

    if dataset == "fashion_mnist":
        images, labels = fashion_mnist_arrays(split)
        images, labels = torch.from_numpy(images), torch.from_numpy(labels)
        return (images[:limit], labels[:limit]) if limit else (images, labels)
    data = load_dataset_for_pretraining(dataset, split=split)
    label_column = next((c for c in ("label", "labels") if c in data.column_names), None)
    if label_column is None:
        raise ValueError(f"kNN evaluation needs labels; dataset {dataset!r} has columns {data.column_names}")
    if limit:
        data = data.select(range(min(limit, len(data))))
    return data, torch.tensor(data[label_column])


def _features(model, processor, images, batch_size: int, desc: str) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        size = processor.crop_size["height"] if getattr(processor, "do_center_crop", False) else processor.size["height"]
        return extract_array_features(model, images, processor.image_mean, processor.image_std, size, batch_size, desc)
    from ..data.datasets import image_column_of
    from .extract import extract_features

    column = image_column_of(images)
    return extract_features(model, processor, [row[column] for row in images], batch_size)[0]


def knn_eval(
    model,
    dataset: str = "fashion_mnist",
    train_split: str = "train",
    test_split: str = "test",
    k: int | list[int] = 20,
    temperature: float = 0.07,
    batch_size: int = 256,
    max_train: int | None = None,
    max_test: int | None = None,
    random_init: bool = False,
) -> dict[str, dict[str, float]]:
    """kNN top-1/top-5 of a model's `pooler_output` (a model dir, Hub id or loaded model) for each k.

    `random_init=True` evaluates the same architecture with freshly initialised weights (the reference a trained
    model must beat).
    """
    from transformers import AutoImageProcessor, AutoModel

    from ..processing.image_processing import processor_for

    path = model if isinstance(model, str) else None
    if path is not None:
        model = AutoModel.from_pretrained(path)
    try:
        processor = AutoImageProcessor.from_pretrained(path) if path else processor_for(model.config)
    except OSError:
        processor = processor_for(model.config)
    if random_init:
        torch.manual_seed(0)
        model = type(model)(model.config)
    train_images, train_labels = _labelled_split(dataset, train_split, max_train)
    test_images, test_labels = _labelled_split(dataset, test_split, max_test)
    train_features = _features(model, processor, train_images, batch_size, "train features")
    test_features = _features(model, processor, test_images, batch_size, "test features")
    ks = [k] if isinstance(k, int) else list(k)
    return {
        f"k={n}": knn_accuracy(train_features, train_labels, test_features, test_labels, n, temperature) for n in ks
    }
