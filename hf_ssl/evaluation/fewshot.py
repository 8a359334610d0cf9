"""Few-shot evaluation: kNN and a linear probe trained on only n labelled images per class (1, 5, 10), as the
semi-supervised results of SSL papers (MSN, DINOv2) report them.

For every (n, seed) the labelled images are a seeded draw of exactly n training images of each class; the test split
is whole. Accuracies are averaged over the seeds (mean and std reported). The probe is L2-regularised logistic
regression (L-BFGS) on standardised features, the usual choice with so few samples (no validation set to tune on).
"""

import statistics

import torch

from .features import model_split_features
from .knn import knn_accuracy
from .linear import probe_accuracy, train_lbfgs_probe


def few_shot_indices(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """Indices of exactly `shots` rows per class of `labels`, drawn at random with `seed` (sorted, deterministic)."""
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    labels = torch.as_tensor(labels)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in labels.unique().tolist():
        rows = (labels == label).nonzero().flatten()
        if rows.numel() < shots:
            raise ValueError(f"class {label} has {rows.numel()} images, fewer than {shots} shots")
        chosen.append(rows[torch.randperm(rows.numel(), generator=generator)[:shots]])
    return torch.cat(chosen).sort().values


def _summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "runs": len(values)}


def few_shot(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    shots: tuple[int, ...] = (1, 5, 10),
    seeds: tuple[int, ...] = (0, 1, 2),
    k: int = 20,
    temperature: float = 0.07,
    l2: float = 1e-3,
) -> dict[str, dict[str, dict[str, float]]]:
    """`{"{n}-shot": {"knn": {mean, std, runs}, "linear": {...}}}` of top-1 accuracy (%) over the seeds.

    kNN uses min(k, n * classes) neighbours; the probe is `train_lbfgs_probe(..., l2, batchnorm=True)`.
    """
    if not seeds:
        raise ValueError("few-shot evaluation needs at least one seed")
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    results = {}
    for n in shots:
        knn_scores, linear_scores = [], []
        for seed in seeds:
            rows = few_shot_indices(train_labels, n, seed)
            features, labels = train_features[rows], train_labels[rows]
            knn_scores.append(knn_accuracy(features, labels, test_features, test_labels, k, temperature)["top1"])
            probe = train_lbfgs_probe(features, labels, num_classes, l2, batchnorm=True)
            linear_scores.append(probe_accuracy(probe, test_features, test_labels))
        results[f"{n}-shot"] = {"knn": _summary(knn_scores), "linear": _summary(linear_scores)}
    return results


def fewshot_eval(
    model,
    dataset: str = "fashion_mnist",
    train_split: str = "train",
    test_split: str = "test",
    shots: tuple[int, ...] = (1, 5, 10),
    seeds: tuple[int, ...] = (0, 1, 2),
    k: int = 20,
    temperature: float = 0.07,
    l2: float = 1e-3,
    batch_size: int = 256,
    max_train: int | None = None,
    max_test: int | None = None,
    random_init: bool = False,
    cache_dir: str | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """`few_shot` on a model's `pooler_output` (model dir, Hub id or loaded model); the labelled images are drawn
    from the (first `max_train` images of the) training split."""
    features = model_split_features(
        model, dataset, {train_split: max_train, test_split: max_test}, batch_size, random_init, cache_dir
    )
    (train_features, train_labels), (test_features, test_labels) = features[train_split], features[test_split]
    return few_shot(train_features, train_labels, test_features, test_labels, shots, seeds, k, temperature, l2)
