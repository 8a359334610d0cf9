"""Label-free quality metrics of an embedding matrix (N, D): how many directions the representation really uses.

- `rankme` (Garrido et al., 2023, "RankMe"): exp of the entropy of the singular values normalised to sum to one
  (+ eps = 1e-7), a smooth effective rank between 1 and min(N, D). Higher usually means better downstream accuracy.
- `alpha_req` (Agrawal et al., 2022, "alpha-ReQ"): the exponent alpha of the power law lambda_i ~ i^-alpha followed by
  the eigenvalues of the embeddings' covariance, fitted by least squares in log-log space. Values near 1 go with good
  representations; small alpha means a flat (noisy) spectrum, large alpha a collapsed one.
- `embedding_std`: mean per-dimension std of the L2-normalised embeddings, about 1/sqrt(D) when they spread over the
  sphere and 0 on complete collapse (the collapse signal of SimSiam, Chen & He 2021).
"""

import math

import torch
import torch.nn.functional as F

RANKME_EPS = 1e-7


def _check_embeddings(embeddings: torch.Tensor, min_rows: int = 1) -> torch.Tensor:
    if not isinstance(embeddings, torch.Tensor):
        raise TypeError(f"embeddings must be a torch.Tensor, got {type(embeddings).__name__}")
    if embeddings.ndim != 2 or embeddings.shape[0] < min_rows:
        raise ValueError(f"embeddings must be (N >= {min_rows}, D), got shape {tuple(embeddings.shape)}")
    return embeddings.detach().float()


def rankme(embeddings: torch.Tensor, eps: float = RANKME_EPS) -> torch.Tensor:
    """RankMe of (N, D) embeddings: exp(-sum p_k log p_k) with p_k = sigma_k / sum(sigma) + eps (a 0-d tensor)."""
    singular_values = torch.linalg.svdvals(_check_embeddings(embeddings))
    p = singular_values / singular_values.sum().clamp_min(torch.finfo(torch.float32).tiny) + eps
    return torch.exp(-(p * torch.log(p)).sum())


def covariance_eigenvalues(embeddings: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the (D, D) covariance of (N, D) embeddings, largest first (from the centred SVD)."""
    embeddings = _check_embeddings(embeddings, min_rows=2)
    centred = embeddings - embeddings.mean(dim=0)
    return torch.linalg.svdvals(centred.double()).square() / (embeddings.shape[0] - 1)


def power_law_exponent(spectrum: torch.Tensor, start: int = 0, stop: int | None = None, rtol: float = 1e-10) -> float:
    """alpha of spectrum[i] ~ (i + 1)^-alpha: minus the least-squares slope of log(spectrum) over log(rank).

    `start`/`stop` select the ranks fitted (0-based, like a slice); values below `rtol` times the largest one
    (numerically zero: beyond the matrix rank) are left out. At least two values must remain.
    """
    spectrum = torch.as_tensor(spectrum, dtype=torch.float64).flatten()
    if spectrum.numel() < 2:
        raise ValueError(f"the power-law fit needs at least two eigenvalues, got {spectrum.numel()}")
    spectrum, _ = spectrum.sort(descending=True)
    threshold = max(rtol * float(spectrum[0]), 0.0)
    ranks = torch.arange(1, spectrum.numel() + 1, dtype=torch.float64)
    spectrum, ranks = spectrum[start:stop], ranks[start:stop]
    keep = spectrum > threshold
    if int(keep.sum()) < 2:
        raise ValueError("the power-law fit needs at least two positive eigenvalues in the fitted range")
    x, y = ranks[keep].log(), spectrum[keep].log()
    x_centred = x - x.mean()
    slope = (x_centred * (y - y.mean())).sum() / x_centred.square().sum()
    return -float(slope)


def alpha_req(embeddings: torch.Tensor, start: int = 0, stop: int | None = None) -> float:
    """alpha-ReQ: the power-law decay exponent of the covariance eigenspectrum of (N, D) embeddings."""
    return power_law_exponent(covariance_eigenvalues(embeddings), start, stop)


def embedding_std(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the per-dimension std (over N) of the L2-normalised (N, D) embeddings (0-d tensor)."""
    return F.normalize(_check_embeddings(embeddings, min_rows=2), dim=1).std(dim=0).mean()


def label_free_metrics(embeddings: torch.Tensor) -> dict[str, float]:
    """`rankme`, `alpha_req` and `embedding_std` of (N, D) embeddings, with the references they compare to:
    `max_rank` = min(N, D) (RankMe's upper bound) and `uniform_std` = 1/sqrt(D)."""
    num, dim = _check_embeddings(embeddings, min_rows=2).shape
    return {
        "rankme": float(rankme(embeddings)),
        "max_rank": min(num, dim),
        "alpha_req": alpha_req(embeddings),
        "embedding_std": float(embedding_std(embeddings)),
        "uniform_std": 1.0 / math.sqrt(dim),
    }


def metrics_eval(
    model,
    dataset: str = "fashion_mnist",
    split: str = "test",
    max_images: int | None = None,
    batch_size: int = 256,
    random_init: bool = False,
    cache_dir: str | None = None,
) -> dict[str, float]:
    """`label_free_metrics` of a model's `pooler_output` on a dataset split (labels are not needed)."""
    from .features import model_split_features

    splits = {split: max_images}
    features, _ = model_split_features(model, dataset, splits, batch_size, random_init, cache_dir, labels=False)[split]
    return label_free_metrics(features)
