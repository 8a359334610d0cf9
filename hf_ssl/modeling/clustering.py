"""Spherical k-means over the embeddings of every process, as DeepCluster v2 runs it on its memory bank at every
epoch (Caron et al., 2020, appendix; `cluster_memory` of facebookresearch/swav `main_deepclusterv2.py`)."""

import torch
import torch.nn.functional as F

from .distributed import all_reduce_sum, broadcast_, rank


@torch.no_grad()
def spherical_kmeans(
    embeddings: torch.Tensor, num_clusters: int, iterations: int = 10, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means with cosine similarity on unit-norm `embeddings`, distributed like DeepCluster v2's.

    The centroids start as `num_clusters` distinct embeddings of process 0 (broadcast to all). Each iteration assigns
    every embedding to its most similar centroid (E step), then moves each centroid to the normalised mean of its
    members over every process (M step: sums and counts all-reduced). A cluster left empty is re-seeded with a random
    embedding (drawn on process 0), so every centroid stays on the data. A final E step gives the assignments.

    Args:
        embeddings: (N, D) unit-norm embeddings of this process (the same N on every process).
        num_clusters: K <= N.
        iterations: E/M iterations (10).
        generator: draws the initial centroids and the re-seeds (the global RNG by default).

    Returns:
        The (K, D) unit-norm centroids, the same on every process, and the (N,) cluster of each local embedding.
    """
    if embeddings.ndim != 2:
        raise ValueError(f"expected (samples, dim) embeddings, got {tuple(embeddings.shape)}")
    num_samples, dim = embeddings.shape
    if not 1 <= num_clusters <= num_samples:
        raise ValueError(f"num_clusters must be in [1, {num_samples}] (the number of embeddings), got {num_clusters}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")

    def random_rows(count: int, distinct: bool) -> torch.Tensor:
        rows = torch.randperm(num_samples, generator=generator)[:count] if distinct else (
            torch.randint(num_samples, (count,), generator=generator))  # fmt: skip
        return embeddings[rows.to(embeddings.device)]

    centroids = torch.empty(num_clusters, dim, device=embeddings.device, dtype=embeddings.dtype)
    if rank() == 0:
        centroids.copy_(random_rows(num_clusters, distinct=True))
    broadcast_(centroids)
    for _ in range(iterations):
        assignments = (embeddings @ centroids.T).argmax(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assignments, embeddings)
        counts = all_reduce_sum(torch.bincount(assignments, minlength=num_clusters))
        sums = all_reduce_sum(sums)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None].to(sums.dtype))
        if empty.any():  # the same on every process (reduced counts)
            if rank() == 0:
                centroids[empty] = random_rows(int(empty.sum()), distinct=False)
            broadcast_(centroids)
        centroids = F.normalize(centroids, dim=1)
    return centroids, (embeddings @ centroids.T).argmax(dim=1)
