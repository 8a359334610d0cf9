"""A visual tokenizer that can be trained here: a k-means codebook of image patches, BEiT's target vocabulary.

BEiT predicts the discrete tokens of a pretrained dVAE; `KMeansPatchTokenizer` replaces it by the nearest of K
centroids of the patches' pixels (optionally normalised per patch), fitted with k-means++ and a few Lloyd
iterations on a sample of a dataset (`fit_kmeans_tokenizer`, `hf-ssl fit-tokenizer`). It is a small
`PreTrainedModel` (`save_pretrained` / `from_pretrained` / `AutoModel`) whose `forward` maps images to token ids.
The images it is fitted on must be normalised like the pretraining views.
"""

import argparse

import torch
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init

from ..targets import normalize_patches, patchify


class KMeansTokenizerConfig(PreTrainedConfig):
    r"""
    Args:
        codebook_size (`int`): K, the number of visual tokens.
        patch_size (`int`): side in pixels of a tokenized patch (the ViT's patch size).
        num_channels (`int`): image channels.
        normalize_patches (`bool`): cluster each patch's pixels minus their mean over their std (shape, not
            brightness) instead of the raw pixels.
    """

    model_type = "ssl_kmeans_tokenizer"

    codebook_size: int = 1024
    patch_size: int = 16
    num_channels: int = 3
    normalize_patches: bool = False

    def __post_init__(self, **kwargs):
        for name in ("codebook_size", "patch_size", "num_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        super().__post_init__(**kwargs)

    @property
    def patch_dim(self) -> int:
        return self.patch_size**2 * self.num_channels


class KMeansPatchTokenizer(PreTrainedModel):
    """Images (B, C, H, W) -> token ids (B, N): the index of the codebook centroid nearest to every patch."""

    config_class = KMeansTokenizerConfig
    base_model_prefix = "tokenizer"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def __init__(self, config: KMeansTokenizerConfig):
        super().__init__(config)
        # a parameter (never trained) rather than a buffer: `save_pretrained` needs one to read the dtype from
        self.codebook = torch.nn.Parameter(torch.zeros(config.codebook_size, config.patch_dim), requires_grad=False)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        if module is self:
            init.zeros_(self.codebook)

    def patch_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, N, p p C) the vectors the codebook clusters."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"expected images (batch, {self.config.num_channels}, height, width), got {tuple(pixel_values.shape)}"
            )
        patches = patchify(pixel_values.float(), self.config.patch_size)
        return normalize_patches(patches) if self.config.normalize_patches else patches

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return nearest_centroid(self.patch_features(pixel_values), self.codebook)


def nearest_centroid(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (squared Euclidean distance) of every point (..., D) among centroids (K, D)."""
    flat = points.reshape(-1, points.shape[-1])
    distances = (centroids * centroids).sum(1) - 2 * flat @ centroids.T  # + |x|^2, the same for every centroid
    return distances.argmin(dim=1).reshape(points.shape[:-1])


def kmeans(points: torch.Tensor, k: int, num_iterations: int = 20, generator: torch.Generator | None = None):
    """k-means++ seeding then Lloyd iterations on points (n, D); returns centroids (k, D).

    A centroid that loses all its points is moved to a random point. Needs at least k points.
    """
    num_points = points.shape[0]
    if num_points < k:
        raise ValueError(f"k-means with k={k} needs at least {k} points, got {num_points}")
    centroids = points.new_empty(k, points.shape[1])
    centroids[0] = points[torch.randint(num_points, (), generator=generator)]
    closest = (points - centroids[0]).pow(2).sum(1)
    for index in range(1, k):
        total = closest.sum()
        if total > 0:
            choice = torch.multinomial(closest / total, 1, generator=generator)[0]
        else:  # fewer distinct points than k: duplicates
            choice = torch.randint(num_points, (), generator=generator)
        centroids[index] = points[choice]
        closest = torch.minimum(closest, (points - centroids[index]).pow(2).sum(1))
    for _ in range(num_iterations):
        assignment = nearest_centroid(points, centroids)
        counts = torch.bincount(assignment, minlength=k)
        sums = points.new_zeros(k, points.shape[1]).index_add_(0, assignment, points)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
        if empty.any():
            centroids[empty] = points[torch.randint(num_points, (int(empty.sum()),), generator=generator)]
    return centroids


def fit_kmeans_tokenizer(
    images: torch.Tensor,
    codebook_size: int = 1024,
    patch_size: int = 16,
    normalize_patches: bool = False,
    num_iterations: int = 20,
    max_patches: int = 200_000,
    seed: int = 0,
) -> KMeansPatchTokenizer:
    """A `KMeansPatchTokenizer` fitted on the patches of `images` (n, C, H, W), normalised like the pretraining
    views; at most `max_patches` patches, drawn at random, are clustered."""
    if images.ndim != 4:
        raise ValueError(f"images must be (count, channels, height, width), got {tuple(images.shape)}")
    config = KMeansTokenizerConfig(
        codebook_size=codebook_size, patch_size=patch_size, num_channels=images.shape[1],
        normalize_patches=normalize_patches,
    )  # fmt: skip
    tokenizer = KMeansPatchTokenizer(config)
    points = tokenizer.patch_features(images).flatten(0, 1)
    generator = torch.Generator().manual_seed(seed)
    if points.shape[0] > max_patches:
        points = points[torch.randperm(points.shape[0], generator=generator)[:max_patches]]
    with torch.no_grad():
        tokenizer.codebook.copy_(kmeans(points, codebook_size, num_iterations, generator))
    return tokenizer


def dataset_images(
    dataset: str, split: str, image_size: int, num_channels: int, mean=None, std=None, max_images: int = 10000
) -> torch.Tensor:
    """Up to `max_images` images of a dataset (`hf_ssl.data` names), resized to `image_size` and normalised as the
    views with the same `mean`/`std` (None: ImageNet's): (n, C, image_size, image_size)."""
    from ...data.datasets import SSLDataset, load_dataset_for_pretraining
    from ...processing.views import SingleViewTransform, collate_views

    data = load_dataset_for_pretraining(dataset, split=split)
    data = data.select(range(min(max_images, len(data))))
    view = SingleViewTransform(
        image_size, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_prob=0.0, mean=mean, std=std, num_channels=num_channels
    )
    samples = SSLDataset(data, view).__getitems__(list(range(len(data))))
    return collate_views(samples)["global_views"][0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory to save the tokenizer to")
    parser.add_argument("--dataset", default="fashion_mnist", help="builtin name, image folder, saved dataset, Hub id")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image-size", type=int, required=True, help="side of the pretraining views")
    parser.add_argument("--patch-size", type=int, required=True, help="the ViT's patch size")
    parser.add_argument("--num-channels", type=int, default=3)
    parser.add_argument("--mean", type=float, nargs="+", default=None, help="the views' normalisation mean")
    parser.add_argument("--std", type=float, nargs="+", default=None, help="the views' normalisation std")
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--normalize-patches", action="store_true", help="cluster per-patch normalised pixels")
    parser.add_argument("--max-images", type=int, default=10000)
    parser.add_argument("--max-patches", type=int, default=200_000)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    """`hf-ssl fit-tokenizer`: fit a k-means patch tokenizer on a dataset and save it for BEiT pretraining."""
    images = dataset_images(
        args.dataset, args.split, args.image_size, args.num_channels, args.mean, args.std, args.max_images
    )
    tokenizer = fit_kmeans_tokenizer(
        images, args.codebook_size, args.patch_size, args.normalize_patches, args.iterations, args.max_patches,
        args.seed,
    )  # fmt: skip
    tokenizer.save_pretrained(args.out)
    usage = torch.bincount(tokenizer(images[:1000]).flatten(), minlength=args.codebook_size)
    print(f"saved a {args.codebook_size}-token k-means tokenizer to {args.out} "
          f"({int((usage > 0).sum())} tokens used on the first {min(1000, len(images))} images)")  # fmt: skip
    return 0
