"""Label-free metrics: RankMe, alpha-ReQ and embedding std on matrices whose answer is known."""

import math

import pytest
import torch

from hf_ssl.evaluation.metrics import (
    alpha_req,
    covariance_eigenvalues,
    embedding_std,
    label_free_metrics,
    power_law_exponent,
    rankme,
)


def _orthonormal(rows: int, cols: int, seed: int, centred: bool = False) -> torch.Tensor:
    """(rows, cols) with orthonormal columns (orthogonal to the all-ones vector when `centred`)."""
    matrix = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if centred:
        matrix = matrix - matrix.mean(dim=0)
    return torch.linalg.qr(matrix).Q


def _with_spectrum(singular_values: torch.Tensor, rows: int, dim: int, centred: bool = False) -> torch.Tensor:
    rank = singular_values.numel()
    return _orthonormal(rows, rank, 0, centred) @ torch.diag(singular_values.double()) @ _orthonormal(dim, rank, 1).T


def test_rankme_of_rank_r_matrix_is_r():
    embeddings = _with_spectrum(torch.full((5,), 3.0), rows=128, dim=64)
    assert torch.linalg.matrix_rank(embeddings) == 5
    assert rankme(embeddings).item() == pytest.approx(5.0, abs=0.1)
    # unequal singular values: exactly exp(entropy) of the normalised spectrum (+ eps, negligible here)
    values = torch.tensor([4.0, 2.0, 1.0, 1.0])
    p = values / values.sum()
    expected = math.exp(-(p * p.log()).sum().item())
    assert rankme(_with_spectrum(values, 50, 20)).item() == pytest.approx(expected, rel=1e-4)
    assert rankme(torch.ones(10, 8)).item() == pytest.approx(1.0, abs=1e-3)


def test_rankme_matches_the_engine_monitor():
    monitors = pytest.importorskip("hf_ssl.training.monitors")
    embeddings = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    assert rankme(embeddings).item() == pytest.approx(monitors.rankme(embeddings).item(), rel=1e-6)
    assert embedding_std(embeddings).item() == pytest.approx(monitors.embedding_std(embeddings).item(), rel=1e-6)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_alpha_req_recovers_the_power_law_exponent(alpha):
    ranks = torch.arange(1, 49, dtype=torch.float64)
    assert power_law_exponent(ranks**-alpha) == pytest.approx(alpha, abs=1e-9)
    # embeddings whose covariance eigenvalues are i^-alpha: singular values sqrt((N - 1) i^-alpha), centred columns
    rows = 200
    embeddings = _with_spectrum(((rows - 1) * ranks**-alpha).sqrt(), rows=rows, dim=64, centred=True)
    torch.testing.assert_close(covariance_eigenvalues(embeddings)[:48], ranks**-alpha)
    assert alpha_req(embeddings) == pytest.approx(alpha, abs=0.05)
    # a float32 copy with an offset (the covariance ignores it) still gives the exponent
    assert alpha_req(embeddings.float() + 5.0) == pytest.approx(alpha, abs=0.05)


def test_power_law_exponent_range_and_errors():
    spectrum = torch.cat([torch.arange(1, 11, dtype=torch.float64) ** -1.5, torch.zeros(5)])
    assert power_law_exponent(spectrum) == pytest.approx(1.5, abs=1e-9)  # zeros beyond the rank are left out
    assert power_law_exponent(spectrum, start=2, stop=8) == pytest.approx(1.5, abs=1e-9)
    with pytest.raises(ValueError, match="at least two"):
        power_law_exponent(torch.tensor([1.0, 0.0, 0.0]))


def test_embedding_std_uniform_and_collapsed():
    generator = torch.Generator().manual_seed(0)
    spread = torch.randn(20000, 16, generator=generator)
    assert embedding_std(spread).item() == pytest.approx(1 / math.sqrt(16), rel=0.02)
    collapsed = torch.ones(100, 16) + 1e-6 * torch.randn(100, 16, generator=generator)
    assert embedding_std(collapsed).item() < 1e-5
    metrics = label_free_metrics(spread[:500])
    assert set(metrics) == {"rankme", "max_rank", "alpha_req", "embedding_std", "uniform_std"}
    assert metrics["max_rank"] == 16 and 14.0 < metrics["rankme"] <= 16.0


def test_bad_input():
    with pytest.raises(ValueError, match=r"\(N >= 1, D\)"):
        rankme(torch.ones(3))
    with pytest.raises(ValueError, match="N >= 2"):
        embedding_std(torch.ones(1, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        rankme([[1.0, 2.0]])
