"""Training-health signals: representation collapse (embedding std, RankMe) and the non-finite loss/gradient guard.

Thresholds (warnings, not errors):
- `embedding_std`: for L2-normalised embeddings spread over all D dimensions the per-dimension std is about
  1/sqrt(D) (uniform on the sphere); a collapse to one point gives 0, and a collapse onto k of D dimensions gives about
  sqrt(k/D)/sqrt(D). We warn below `COLLAPSE_STD_RATIO / sqrt(D)`, i.e. when fewer than ~1 % of the dimensions are used.
- `rankme`: the effective rank of the batch of embeddings (Garrido et al., 2023), between 1 and min(B, D); we warn
  below `MIN_RANKME`, a (near) rank-one collapse.
"""

import logging
import math

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

COLLAPSE_STD_RATIO = 0.1
MIN_RANKME = 2.0


class NonFiniteError(RuntimeError):
    """Training produced a NaN/Inf loss or gradient norm."""


def embedding_std(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the per-dimension std (over the batch) of the L2-normalised embeddings (B, D)."""
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"embeddings must be (batch >= 2, dim), got shape {tuple(embeddings.shape)}")
    return F.normalize(embeddings.detach().float(), dim=1).std(dim=0).mean()


def rankme(embeddings: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """RankMe: exp of the entropy of the singular values of (B, D) embeddings normalised to sum to 1 (+ eps)."""
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (batch, dim), got shape {tuple(embeddings.shape)}")
    singular_values = torch.linalg.svdvals(embeddings.detach().float())
    p = singular_values / singular_values.sum().clamp_min(torch.finfo(torch.float32).tiny) + eps
    return torch.exp(-(p * torch.log(p)).sum())


def collapse_metrics(embeddings: torch.Tensor, step: int) -> dict[str, float]:
    """`embedding_std` and `rankme` as floats (one host sync), with a logged warning at `step` on collapse."""
    dim = embeddings.shape[1]
    std, rank = torch.stack([embedding_std(embeddings), rankme(embeddings)]).tolist()
    if std < COLLAPSE_STD_RATIO / math.sqrt(dim):
        logger.warning(
            "step %d: embedding std %.3g is below %.3g (= %g / sqrt(%d)): the representation may be collapsing",
            step, std, COLLAPSE_STD_RATIO / math.sqrt(dim), COLLAPSE_STD_RATIO, dim,
        )  # fmt: skip
    if rank < MIN_RANKME:
        logger.warning("step %d: RankMe %.3g is below %g: the embeddings are (nearly) rank one", step, rank, MIN_RANKME)
    return {"monitor/embedding_std": std, "monitor/rankme": rank}


class NonFiniteGuard:
    """Remembers, on the device and without host syncs, the first step whose loss or gradient norm was not finite.

    `record` is called every optimizer step; `check` (one host sync) raises `NonFiniteError` naming that step and
    what was not finite. The engine checks at every log step and before every checkpoint, so no checkpoint ever
    holds weights updated from a non-finite step.
    """

    KINDS = {1: "loss", 2: "gradient norm"}

    def __init__(self, device: torch.device):
        self.first_step = torch.tensor(-1, device=device)
        self.kind = torch.tensor(0, device=device)

    @staticmethod
    def classify(loss: torch.Tensor, grad_norm: torch.Tensor | None) -> torch.Tensor:
        """0 if finite, 1 for a non-finite loss, 2 for a finite loss but a non-finite gradient norm (device tensor)."""
        kind = torch.where(torch.isfinite(loss), 0, 1)
        if grad_norm is not None:
            kind = torch.where((kind == 0) & ~torch.isfinite(grad_norm), 2, kind)
        return kind

    def record(self, step: int, kind: torch.Tensor) -> None:
        new = (kind > 0) & (self.first_step < 0)
        self.first_step = torch.where(new, step, self.first_step)
        self.kind = torch.where(new, kind, self.kind)

    def check(self, gather=None) -> None:
        """Raise if any step so far was non-finite. `gather` (e.g. `accelerator.gather`) collects every process's
        record so that all processes stop together, at the earliest bad step of any of them."""
        record = torch.stack([self.first_step, self.kind]).unsqueeze(0)
        if gather is not None:
            record = gather(record)
        bad = [(step, kind) for step, kind in record.tolist() if step >= 0]
        if bad:
            step, kind = min(bad)
            raise NonFiniteError(
                f"{self.describe(kind, step)}; training stopped. The last checkpoint before it is intact: lower the "
                "learning rate or enable gradient clipping and resume from it, or set train.allow_nonfinite_skip=true "
                "to skip such steps"
            )

    @staticmethod
    def describe(kind: int, step: int) -> str:
        return f"non-finite {NonFiniteGuard.KINDS[kind]} at step {step}"
