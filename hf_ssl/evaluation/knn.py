"""Weighted k-nearest-neighbour evaluation of frozen features, exactly the DINO protocol.

Features are L2-normalised; a test image's k nearest training images (cosine similarity) vote for their label with
weight exp(sim / T). Top-1 and top-5 accuracy of the summed votes are reported.
"""

import torch
import torch.nn.functional as F

from .features import model_split_features


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
    cache_dir: str | None = None,
) -> dict[str, dict[str, float]]:
    """kNN top-1/top-5 of a model's `pooler_output` (a model dir, Hub id or loaded model) for each k.

    `random_init=True` evaluates the same architecture with freshly initialised weights (the reference a trained
    model must beat). With `cache_dir`, features are cached to safetensors (see `hf_ssl.evaluation.features`).
    """
    features = model_split_features(
        model, dataset, {train_split: max_train, test_split: max_test}, batch_size, random_init, cache_dir
    )
    (train_features, train_labels), (test_features, test_labels) = features[train_split], features[test_split]
    ks = [k] if isinstance(k, int) else list(k)
    return {
        f"k={n}": knn_accuracy(train_features, train_labels, test_features, test_labels, n, temperature) for n in ks
    }


def raw_pixel_knn(max_train: int | None = None, max_test: int | None = None, k: int = 20, temperature: float = 0.07):
    """kNN top-1/top-5 on Fashion-MNIST's raw pixels, standardised per pixel with the training set's statistics:
    the reference any learned feature is compared with."""
    from ..data.datasets import fashion_mnist_arrays

    (train_images, train_labels), (test_images, test_labels) = (
        fashion_mnist_arrays("train"), fashion_mnist_arrays("test")
    )  # fmt: skip
    train_pixels = torch.tensor(train_images[:max_train]).flatten(1).float()
    test_pixels = torch.tensor(test_images[:max_test]).flatten(1).float()
    mean, std = train_pixels.mean(0), train_pixels.std(0).clamp_min(1e-6)
    return knn_accuracy(
        (train_pixels - mean) / std,
        torch.tensor(train_labels[:max_train]),
        (test_pixels - mean) / std,
        torch.tensor(test_labels[:max_test]),
        k,
        temperature,
    )
