"""Memories of earlier batches kept during pretraining: MoCo's queue of keys (the negatives) and NNCLR's support set
(where positives are looked up).

A `FeatureQueue` is a FIFO of the last `size` unit-norm feature vectors, held in registered buffers so it is saved
with the model and restored on resume. The model gathers the batch of every process before enqueueing
(`distributed.gather_no_grad`), so all processes hold the same queue, the one a single process would build from the
global batch.
"""

import torch
import torch.nn.functional as F
from transformers import initialization as init

from .heads import SSLHead


class FeatureQueue(SSLHead):
    """A queue of `size` unit-norm `dim`-dimensional features, oldest first out.

    Starts as random unit vectors (MoCo's initialisation), then each `enqueue` overwrites the oldest rows.

    Buffers:
        features: (size, dim) the stored unit-norm vectors.
        pointer: () index of the next row to overwrite.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be >= 1, got size={size}, dim={dim}")
        self.register_buffer("features", torch.empty(size, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.reset_parameters()

    @property
    def size(self) -> int:
        return self.features.shape[0]

    def reset_parameters(self) -> None:
        random = torch.randn(self.features.shape, device=self.features.device, dtype=self.features.dtype)
        init.copy_(self.features, F.normalize(random, dim=1))
        init.zeros_(self.pointer)

    @torch.no_grad()
    def enqueue(self, features: torch.Tensor) -> None:
        """Write `features` (N, dim), normalised, over the N oldest rows (only the newest `size` if N > size).

        The pointer stays on the device: no host sync.
        """
        if features.ndim != 2 or features.shape[1] != self.features.shape[1]:
            raise ValueError(f"expected features (N, {self.features.shape[1]}), got {tuple(features.shape)}")
        features = F.normalize(features.detach(), dim=1)[-self.size :]
        rows = (self.pointer + torch.arange(features.shape[0], device=self.pointer.device)) % self.size
        self.features.index_copy_(0, rows, features.to(self.features.dtype))
        self.pointer.copy_((self.pointer + features.shape[0]) % self.size)

    @torch.no_grad()
    def nearest_neighbours(self, queries: torch.Tensor) -> torch.Tensor:
        """NN(z, Q): for each row of `queries` (B, dim), the stored vector closest to it in cosine similarity (the
        closest in Euclidean distance after l2 normalisation), as NNCLR's support set. No gradient."""
        if queries.ndim != 2 or queries.shape[1] != self.features.shape[1]:
            raise ValueError(f"expected queries (B, {self.features.shape[1]}), got {tuple(queries.shape)}")
        similarity = F.normalize(queries.detach(), dim=1) @ self.features.to(queries.dtype).T
        return self.features[similarity.argmax(dim=1)].to(queries.dtype)
