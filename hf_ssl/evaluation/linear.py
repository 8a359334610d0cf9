"""Linear probe: a linear classifier trained on frozen features, reported as top-1 accuracy on the test split.

Two solvers:
- `sgd` (DINO's protocol): mini-batch SGD with momentum 0.9 and a cosine schedule, one run per learning rate of a
  sweep; the learning rate is chosen on a validation part held out from the training features, then the probe is
  retrained on all of them (set `val_fraction=0` to pick on the test split as DINO's `eval_linear.py` does).
- `lbfgs`: full-batch multinomial logistic regression (L-BFGS, strong-Wolfe line search) with an L2 penalty swept
  the same way; deterministic, and fast for the feature sizes of small models.

`batchnorm=True` puts a `BatchNorm1d(affine=False)` in front of the linear layer as MAE does for its probe: it
standardises the features, which matters for encoders whose features are not normalised (MAE, I-JEPA).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .features import model_split_features

DEFAULT_LRS = (0.001, 0.01, 0.1, 1.0, 10.0)
DEFAULT_L2S = (1e-6, 1e-4, 1e-2)


class LinearProbe(nn.Module):
    """`Linear(dim, num_classes)`, optionally after a `BatchNorm1d(affine=False, eps=1e-6)` (MAE's probe head)."""

    def __init__(self, dim: int, num_classes: int, batchnorm: bool = False):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6) if batchnorm else nn.Identity()
        self.linear = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(features))


def _check(features: torch.Tensor, labels: torch.Tensor) -> None:
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
    if labels.shape != features.shape[:1]:
        raise ValueError(f"{features.shape[0]} features but labels of shape {tuple(labels.shape)}")


def train_sgd_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    lr: float,
    epochs: int = 30,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    batchnorm: bool = False,
    seed: int = 0,
) -> LinearProbe:
    """A `LinearProbe` trained with SGD (momentum 0.9, cosine learning-rate decay to 0, shuffled mini-batches)."""
    _check(features, labels)
    if lr <= 0 or epochs < 1 or batch_size < 1:
        raise ValueError(f"need lr > 0, epochs >= 1 and batch_size >= 1, got {lr}, {epochs}, {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = LinearProbe(features.shape[1], num_classes, batchnorm)
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(features.shape[0] / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    features, labels = features.float(), labels.long()
    probe.train()
    for _ in range(epochs):
        order = torch.randperm(features.shape[0], generator=generator)
        for batch in order.split(batch_size):
            if batchnorm and batch.numel() == 1:  # BatchNorm cannot train on a single sample
                continue
            loss = F.cross_entropy(probe(features[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return probe.eval()


def train_lbfgs_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    l2: float = 1e-4,
    batchnorm: bool = False,
    max_iter: int = 500,
) -> LinearProbe:
    """Multinomial logistic regression: minimises mean cross-entropy + l2/2 * ||W||^2 (bias not penalised) with
    full-batch L-BFGS. With `batchnorm`, the norm layer holds the training features' mean and variance."""
    _check(features, labels)
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    features, labels = features.double(), labels.long()
    probe = LinearProbe(features.shape[1], num_classes, batchnorm).double()
    if batchnorm:
        probe.norm.running_mean.copy_(features.mean(dim=0))
        probe.norm.running_var.copy_(features.var(dim=0, unbiased=False))
    probe.eval()
    nn.init.zeros_(probe.linear.weight)
    optimizer = torch.optim.LBFGS(
        probe.linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-7,
        tolerance_change=1e-10, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(probe(features), labels) + 0.5 * l2 * probe.linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe.float()


@torch.no_grad()
def probe_accuracy(probe: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (in %) of a trained probe."""
    probe.eval()
    predictions = probe(features.float()).argmax(dim=1)
    return 100.0 * (predictions == labels).float().mean().item()


def _validation_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, validation) of a seeded random split; the validation part gets `fraction` of the rows."""
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed))
    num_val = max(1, round(fraction * labels.shape[0]))
    if num_val >= labels.shape[0]:
        raise ValueError(f"val_fraction={fraction} leaves no training features out of {labels.shape[0]}")
    return order[num_val:], order[:num_val]


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    solver: str = "sgd",
    batchnorm: bool = False,
    sweep: tuple[float, ...] | None = None,
    val_fraction: float = 0.1,
    epochs: int = 30,
    batch_size: int = 256,
    seed: int = 0,
) -> dict:
    """Top-1 (%) of the best probe of a sweep: learning rates for `sgd` (default `DEFAULT_LRS`), L2 penalties for
    `lbfgs` (default `DEFAULT_L2S`). Returns `{"top1", "lr" | "l2", "sweep": {value: validation top-1}}`."""
    if solver not in ("sgd", "lbfgs"):
        raise ValueError(f"solver must be 'sgd' or 'lbfgs', got {solver!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    _check(train_features, train_labels)
    _check(test_features, test_labels)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    name = "lr" if solver == "sgd" else "l2"
    values = tuple(sweep or (DEFAULT_LRS if solver == "sgd" else DEFAULT_L2S))

    def fit(features, labels, value):
        if solver == "sgd":
            return train_sgd_probe(features, labels, num_classes, value, epochs, batch_size, 0.0, batchnorm, seed)
        return train_lbfgs_probe(features, labels, num_classes, value, batchnorm)

    if val_fraction > 0 and len(values) > 1:
        fit_rows, val_rows = _validation_split(train_labels, val_fraction, seed)
        fit_set = (train_features[fit_rows], train_labels[fit_rows])
        val_set = (train_features[val_rows], train_labels[val_rows])
    else:
        fit_set, val_set = (train_features, train_labels), (test_features, test_labels)
    scores = {value: probe_accuracy(fit(*fit_set, value), *val_set) for value in values}
    best = max(values, key=lambda value: scores[value])  # first of equals: the smallest value listed first
    probe = fit(train_features, train_labels, best)
    return {"top1": probe_accuracy(probe, test_features, test_labels), name: best, "sweep": scores}


def linear_eval(
    model,
    dataset: str = "fashion_mnist",
    train_split: str = "train",
    test_split: str = "test",
    solver: str = "sgd",
    batchnorm: tuple[bool, ...] = (False, True),
    sweep: tuple[float, ...] | None = None,
    val_fraction: float = 0.1,
    epochs: int = 30,
    batch_size: int = 256,
    max_train: int | None = None,
    max_test: int | None = None,
    random_init: bool = False,
    cache_dir: str | None = None,
) -> dict[str, dict]:
    """Linear-probe top-1 of a model's `pooler_output` (model dir, Hub id or loaded model), without (`linear`) and
    with (`linear+bn`) the BatchNorm in front, as chosen by `batchnorm`."""
    features = model_split_features(
        model, dataset, {train_split: max_train, test_split: max_test}, batch_size, random_init, cache_dir
    )
    (train_features, train_labels), (test_features, test_labels) = features[train_split], features[test_split]
    return {
        "linear+bn" if norm else "linear": linear_probe(
            train_features, train_labels, test_features, test_labels, solver, norm, sweep, val_fraction, epochs,
            batch_size, seed=0,
        )  # fmt: skip
        for norm in batchnorm
    }

