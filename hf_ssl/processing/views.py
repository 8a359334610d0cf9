"""Training views: the random crops and colour augmentations that self-supervised methods learn invariance to.

A views transform maps one decoded image (a `PIL.Image` or a uint8 tensor (C, H, W) with 1 or 3 channels) to a dict
of crops, e.g. `{"global_views": [v1, v2], "local_views": [l1, ..., lN]}`. The image becomes a uint8 tensor once, all
crops and colour operations run on uint8 tensors (no PIL round trip per crop), and each view is converted to float and
normalized as its last step. `collate_views` then stacks a list of such samples view-major, one tensor per resolution,
as the pretraining contract asks: `global_views` (V_g, B, C, H, W), `local_views` (V_l, B, C, h, w), `labels` (B,).

- `TwoViewTransform`: SimCLR / BYOL / MoCo style, two crops of one resolution with per-view blur and solarize
  probabilities (defaults are BYOL's asymmetric 1.0 / 0.1 blur and 0.0 / 0.2 solarize).
- `MultiCropTransform`: DINO style, two global crops plus N small local crops.
- `SingleViewTransform`: one crop and flip (masked image modeling: MAE, SimMIM, BEiT, I-JEPA).
- `build_views(type=..., masking=..., **kwargs)`: builds one from a recipe's `views:` section, optionally wrapped
  in `MaskedViews` so the masks of the global views are drawn with them (`hf_ssl.processing.masking`).
"""

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..data.images import to_rgb
from .masking import MaskedViews, build_mask_generator

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ImageNet statistics of the grayscale (luma) image, the default for 1-channel models.
IMAGENET_GRAY_MEAN = (0.449,)
IMAGENET_GRAY_STD = (0.226,)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)

_INTERPOLATIONS = {
    "nearest": v2.InterpolationMode.NEAREST,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
}


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian-blur kernel of about 10 % of the crop side (23 for 224, as in SimCLR/BYOL), at least 3."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def _pair(value, name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        value = (value, value)
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be a number or a pair of numbers, got {value!r}")
    return float(value[0]), float(value[1])


def _probability(value, name: str) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _range(value, name: str, low: float = 0.0, high: float = float("inf")) -> tuple[float, float]:
    first, second = _pair(value, name)
    if not low <= first <= second <= high:
        raise ValueError(f"{name} must be an increasing pair inside [{low}, {high}], got {value!r}")
    return first, second


def _normalization(mean, std, num_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std for `num_channels`; None means ImageNet's, a single value is broadcast to all channels."""
    if mean is None:
        mean = IMAGENET_MEAN if num_channels == 3 else IMAGENET_GRAY_MEAN
    if std is None:
        std = IMAGENET_STD if num_channels == 3 else IMAGENET_GRAY_STD
    mean, std = (tuple(float(v) for v in ([x] if isinstance(x, (int, float)) else x)) for x in (mean, std))
    if len(mean) == 1:
        mean = mean * num_channels
    if len(std) == 1:
        std = std * num_channels
    if len(mean) != num_channels or len(std) != num_channels:
        raise ValueError(f"mean {mean} and std {std} must have 1 or num_channels={num_channels} values")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be positive, got {std}")
    return mean, std


def to_uint8_tensor(image, num_channels: int) -> torch.Tensor:
    """`image` (PIL image or uint8 tensor (C, H, W), C in {1, 3}) as a uint8 tensor with `num_channels` channels.

    3 -> 1 channels uses the ITU-R 601 luma weights (PIL's and torchvision's grayscale); 1 -> 3 repeats the channel.
    """
    if isinstance(image, Image.Image):
        tensor = TF.pil_to_tensor(image if image.mode == "L" else to_rgb(image))
    elif isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise TypeError(f"views expect uint8 image tensors (values 0-255), got dtype {image.dtype}")
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"views expect an image tensor (C, H, W) with C = 1 or 3, got {tuple(image.shape)}")
        tensor = image
    else:
        raise TypeError(f"views expect a PIL.Image.Image or a uint8 torch.Tensor (C, H, W), got {type(image).__name__}")
    if tensor.shape[0] == num_channels:
        return tensor
    if num_channels == 1:
        return TF.rgb_to_grayscale(tensor, num_output_channels=1)
    return tensor.expand(3, -1, -1).contiguous()


class SeparableGaussianBlur(v2.GaussianBlur):
    """`v2.GaussianBlur` (same sigma sampling, same reflect padding) computed as two 1-D passes.

    torchvision convolves with the full k x k kernel; a Gaussian is separable, so a row pass and a column pass give
    the same image (up to float rounding) at 2k instead of k^2 multiply-adds per pixel: ~5x faster at k = 23.
    """

    def transform(self, inpt, params):
        if not isinstance(inpt, torch.Tensor) or inpt.ndim != 3:
            return super().transform(inpt, params)
        sigma_y, sigma_x = params["sigma"][1], params["sigma"][0]
        size_x, size_y = self.kernel_size
        image = inpt.as_subclass(torch.Tensor)
        channels = image.shape[0]
        blurred = image.to(torch.float32).unsqueeze(0)  # (1, C, H, W), one grouped convolution over the channels
        blurred = F.pad(blurred, (size_x // 2, size_x // 2, size_y // 2, size_y // 2), mode="reflect")
        row = _gaussian_kernel1d(size_x, sigma_x).view(1, 1, 1, size_x).expand(channels, -1, -1, -1)
        column = _gaussian_kernel1d(size_y, sigma_y).view(1, 1, size_y, 1).expand(channels, -1, -1, -1)
        blurred = F.conv2d(F.conv2d(blurred, row, groups=channels), column, groups=channels).squeeze(0)
        if image.dtype == torch.uint8:
            blurred = blurred.round_().clamp_(0, 255)
        blurred = blurred.to(image.dtype)
        return tv_tensors.wrap(blurred, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else blurred


def _gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    positions = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    kernel = torch.exp(-0.5 * (positions / sigma) ** 2)
    return kernel / kernel.sum()


def view_augmentation(
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    interpolation: str,
    hflip_prob: float,
    color_jitter_prob: float,
    color_jitter: tuple[float, float, float, float],
    grayscale_prob: float,
    blur_prob: float,
    blur_sigma: tuple[float, float],
    solarize_prob: float,
    solarize_threshold: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    num_channels: int,
) -> v2.Compose:
    """The pipeline of one view: crop, flip, colour jitter, grayscale, blur, solarize on uint8, then float + normalize.

    Steps whose probability is 0 are left out. On 1-channel images saturation and hue jitter and grayscale are
    meaningless and are left out too.
    """
    steps = [v2.RandomResizedCrop(size, scale=scale, ratio=ratio, interpolation=_INTERPOLATIONS[interpolation])]
    if hflip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(hflip_prob))
    brightness, contrast, saturation, hue = color_jitter
    if num_channels == 1:
        saturation = hue = 0.0
    if color_jitter_prob > 0 and any((brightness, contrast, saturation, hue)):
        jitter = v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)
        steps.append(v2.RandomApply([jitter], p=color_jitter_prob))
    if grayscale_prob > 0 and num_channels == 3:
        steps.append(v2.RandomGrayscale(grayscale_prob))
    if blur_prob > 0:
        steps.append(v2.RandomApply([SeparableGaussianBlur(blur_kernel_size(size), sigma=blur_sigma)], p=blur_prob))
    if solarize_prob > 0:
        steps.append(v2.RandomSolarize(threshold=solarize_threshold, p=solarize_prob))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    return v2.Compose(steps)


def _shared_options(
    num_channels, interpolation, ratio, hflip_prob, color_jitter_prob, color_jitter_strength, brightness, contrast,
    saturation, hue, grayscale_prob, blur_sigma, solarize_threshold, mean, std, **per_transform,
) -> dict:
    """Checked `view_augmentation` arguments that every view of a transform shares (crop size/scale excluded)."""
    if num_channels not in (1, 3):
        raise ValueError(f"num_channels must be 1 or 3, got {num_channels!r}")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {interpolation!r}")
    if not isinstance(color_jitter_strength, (int, float)) or color_jitter_strength < 0:
        raise ValueError(f"color_jitter_strength must be a non-negative number, got {color_jitter_strength!r}")
    jitter = tuple(float(v) * color_jitter_strength for v in (brightness, contrast, saturation, hue))
    if min(jitter) < 0 or jitter[3] > 0.5:
        raise ValueError(f"colour jitter must be non-negative with hue <= 0.5, got {jitter} after strength")
    if not isinstance(solarize_threshold, int) or not 0 <= solarize_threshold <= 255:
        raise ValueError(f"solarize_threshold is a uint8 pixel value in [0, 255], got {solarize_threshold!r}")
    mean, std = _normalization(mean, std, num_channels)
    return dict(
        ratio=_range(ratio, "ratio", low=1e-6),
        interpolation=interpolation,
        hflip_prob=_probability(hflip_prob, "hflip_prob"),
        color_jitter_prob=_probability(color_jitter_prob, "color_jitter_prob"),
        color_jitter=jitter,
        grayscale_prob=_probability(grayscale_prob, "grayscale_prob"),
        blur_sigma=_range(blur_sigma, "blur_sigma", low=1e-6),
        solarize_threshold=solarize_threshold,
        mean=mean,
        std=std,
        num_channels=num_channels,
    )


def _positive_int(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class _ViewsTransform:
    """What the transforms below share: argument record, per-image preparation, repr."""

    def __init__(self, config: dict):
        self.config = config
        self.common = _shared_options(**config)
        self.num_channels = config["num_channels"]
        self.mean, self.std = self.common["mean"], self.common["std"]

    def _prepare(self, image) -> torch.Tensor:
        return to_uint8_tensor(image, self.num_channels)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.config.items())
        return f"{type(self).__name__}({fields})"


class TwoViewTransform(_ViewsTransform):
    """Two random views of one image (SimCLR, BYOL, MoCo, Barlow Twins, VICReg...): `{"global_views": [v1, v2]}`.

    Each view: random resized crop to `size` (area fraction in `scale`), horizontal flip, colour jitter
    (brightness, contrast, saturation, hue) x `color_jitter_strength` applied with `color_jitter_prob`, grayscale,
    Gaussian blur (kernel ~10 % of `size`, sigma uniform in `blur_sigma`) and solarization. `blur_prob` and
    `solarize_prob` are one probability for both views or a pair (view 1, view 2); the defaults are BYOL's
    (blur 1.0 / 0.1, solarize 0.0 / 0.2); SimCLR is `blur_prob=0.5, solarize_prob=0.0`.
    """

    def __init__(
        self,
        size: int = 224,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
        hflip_prob: float = 0.5,
        color_jitter_prob: float = 0.8,
        color_jitter_strength: float = 1.0,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        hue: float = 0.1,
        grayscale_prob: float = 0.2,
        blur_prob: float | Sequence[float] = (1.0, 0.1),
        blur_sigma: Sequence[float] = (0.1, 2.0),
        solarize_prob: float | Sequence[float] = (0.0, 0.2),
        solarize_threshold: int = 128,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_channels: int = 3,
    ):
        super().__init__({k: v for k, v in locals().items() if k not in ("self", "__class__")})
        size = _positive_int(size, "size")
        scale = _range(scale, "scale", high=1.0)
        blur_probs, solarize_probs = _pair(blur_prob, "blur_prob"), _pair(solarize_prob, "solarize_prob")
        self.views = [
            view_augmentation(
                size, scale,
                blur_prob=_probability(blur, "blur_prob"),
                solarize_prob=_probability(solarize, "solarize_prob"),
                **self.common,
            )
            for blur, solarize in zip(blur_probs, solarize_probs)
        ]  # fmt: skip

    def __call__(self, image) -> dict[str, list[torch.Tensor]]:
        image = self._prepare(image)
        return {"global_views": [view(image) for view in self.views]}


class MultiCropTransform(_ViewsTransform):
    """DINO's multi-crop: `{"global_views": [g1, g2], "local_views": [l1, ..., lN]}` (no `local_views` when N = 0).

    Global crops: `global_crop_size`, area fraction in `global_crop_scale`; Gaussian blur always on the first, with
    probability 0.1 on the second, which is also solarized with probability 0.2 (`global_blur_prob`,
    `global_solarize_prob`). Local crops: `local_crop_size`, area in `local_crop_scale`, blur with probability 0.5.
    All crops get DINO's flip, colour jitter (p 0.8) and grayscale (p 0.2), bicubic resizing.
    """

    def __init__(
        self,
        global_crop_size: int = 224,
        global_crop_scale: Sequence[float] = (0.4, 1.0),
        local_crop_size: int = 96,
        local_crop_scale: Sequence[float] = (0.05, 0.4),
        num_local_crops: int = 8,
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        interpolation: str = "bicubic",
        hflip_prob: float = 0.5,
        color_jitter_prob: float = 0.8,
        color_jitter_strength: float = 1.0,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        hue: float = 0.1,
        grayscale_prob: float = 0.2,
        global_blur_prob: float | Sequence[float] = (1.0, 0.1),
        global_solarize_prob: float | Sequence[float] = (0.0, 0.2),
        local_blur_prob: float = 0.5,
        local_solarize_prob: float = 0.0,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        solarize_threshold: int = 128,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_channels: int = 3,
    ):
        super().__init__({k: v for k, v in locals().items() if k not in ("self", "__class__")})
        global_crop_size = _positive_int(global_crop_size, "global_crop_size")
        local_crop_size = _positive_int(local_crop_size, "local_crop_size")
        if not isinstance(num_local_crops, int) or num_local_crops < 0:
            raise ValueError(f"num_local_crops must be a non-negative int, got {num_local_crops!r}")
        global_scale = _range(global_crop_scale, "global_crop_scale", high=1.0)
        blur_probs = _pair(global_blur_prob, "global_blur_prob")
        solarize_probs = _pair(global_solarize_prob, "global_solarize_prob")
        self.global_views = [
            view_augmentation(
                global_crop_size, global_scale,
                blur_prob=_probability(blur, "global_blur_prob"),
                solarize_prob=_probability(solarize, "global_solarize_prob"),
                **self.common,
            )
            for blur, solarize in zip(blur_probs, solarize_probs)
        ]  # fmt: skip
        self.num_local_crops = num_local_crops
        self.local_view = view_augmentation(
            local_crop_size,
            _range(local_crop_scale, "local_crop_scale", high=1.0),
            blur_prob=_probability(local_blur_prob, "local_blur_prob"),
            solarize_prob=_probability(local_solarize_prob, "local_solarize_prob"),
            **self.common,
        )

    def __call__(self, image) -> dict[str, list[torch.Tensor]]:
        image = self._prepare(image)
        views = {"global_views": [view(image) for view in self.global_views]}
        if self.num_local_crops:
            views["local_views"] = [self.local_view(image) for _ in range(self.num_local_crops)]
        return views


class SingleViewTransform(_ViewsTransform):
    """One random view per image (MAE, SimMIM, MaskFeat, BEiT, I-JEPA): `{"global_views": [v]}`.

    Masked image modeling needs no second view: a random resized crop (MAE: scale 0.2-1, bicubic) and a horizontal
    flip; colour jitter, grayscale, blur and solarize are available but off by default (BEiT adds colour jitter 0.4).
    """

    def __init__(
        self,
        size: int = 224,
        scale: Sequence[float] = (0.2, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        interpolation: str = "bicubic",
        hflip_prob: float = 0.5,
        color_jitter_prob: float = 0.0,
        color_jitter_strength: float = 1.0,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.0,
        grayscale_prob: float = 0.0,
        blur_prob: float = 0.0,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        solarize_prob: float = 0.0,
        solarize_threshold: int = 128,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_channels: int = 3,
    ):
        super().__init__({k: v for k, v in locals().items() if k not in ("self", "__class__")})
        self.view = view_augmentation(
            _positive_int(size, "size"),
            _range(scale, "scale", high=1.0),
            blur_prob=_probability(blur_prob, "blur_prob"),
            solarize_prob=_probability(solarize_prob, "solarize_prob"),
            **self.common,
        )

    def __call__(self, image) -> dict[str, list[torch.Tensor]]:
        return {"global_views": [self.view(self._prepare(image))]}


VIEWS = {"single_view": SingleViewTransform, "two_view": TwoViewTransform, "multi_crop": MultiCropTransform}


def build_views(type: str, masking: dict | None = None, **kwargs) -> _ViewsTransform | MaskedViews:
    """A views transform from a recipe's `views:` section: `type` (`single_view` | `two_view` | `multi_crop`) and its
    arguments.

    `masking` adds patch masks of the global views (`MaskedViews`): `type` (`random` | `block` | `multiblock`),
    the patch grid as `patch_size` (the global crop size divided by it) or `grid_size`, an optional
    `mask_probability`, and the generator's own arguments (`hf_ssl.processing.masking`).
    """
    if type not in VIEWS:
        raise ValueError(f"unknown views type {type!r}; expected one of {sorted(VIEWS)}")
    cls = VIEWS[type]
    accepted = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for views type {type!r}; accepted: {accepted}")
    views = cls(**kwargs)
    if masking is None:
        return views
    if not isinstance(masking, dict) or "type" not in masking:
        raise ValueError(f"views masking must be a dict with a 'type' key, got {masking!r}")
    masking = dict(masking)
    patch_size, grid_size = masking.pop("patch_size", None), masking.pop("grid_size", None)
    if (patch_size is None) == (grid_size is None):
        raise ValueError("views masking needs exactly one of patch_size or grid_size")
    if grid_size is None:
        crop_size = views.config["global_crop_size" if isinstance(views, MultiCropTransform) else "size"]
        if not isinstance(patch_size, int) or patch_size < 1 or crop_size % patch_size:
            raise ValueError(
                f"masking patch_size must be a positive int dividing the crop size {crop_size}, got {patch_size!r}"
            )
        grid_size = crop_size // patch_size
    mask_probability = masking.pop("mask_probability", 1.0)
    return MaskedViews(views, build_mask_generator(**masking), grid_size, mask_probability=mask_probability)


INDEX_MASK_KEYS = ("context_indices", "target_indices")


def _collate_index_masks(samples: list[dict]) -> dict[str, torch.Tensor]:
    """I-JEPA's index masks, truncated to the batch's shortest as its collator does (so they stack).

    `context_indices` (a list of V_g LongTensors per sample) -> (V_g, B, N_c_min); `target_indices` (V_g lists of
    M LongTensors per sample) -> (V_g, M, B, N_t_min), the minimum taken over all samples and targets.
    """
    batch = {}
    if "context_indices" in samples[0]:
        contexts = [sample["context_indices"] for sample in samples]
        keep = min(len(index) for views in contexts for index in views)
        per_view = zip(*contexts)
        batch["context_indices"] = torch.stack([torch.stack([index[:keep] for index in view]) for view in per_view])
    if "target_indices" in samples[0]:
        targets = [sample["target_indices"] for sample in samples]
        keep = min(len(index) for views in targets for blocks in views for index in blocks)
        batch["target_indices"] = torch.stack([
            torch.stack([torch.stack([index[:keep] for index in block]) for block in zip(*view)])
            for view in zip(*targets)
        ])  # fmt: skip
    return batch


def collate_views(samples: Sequence) -> dict[str, torch.Tensor]:
    """Stack `(views, label)` samples into the pretraining batch, one tensor per view kind, view-major.

    `views` is a dict like `{"global_views": [v1, v2], "local_views": [...]}` (a transform's output); each kind
    becomes one tensor (V, B, ...); `masks` (V_g, N) per sample become (V_g, B, N), and I-JEPA's index masks are
    truncated to the batch's shortest (`_collate_index_masks`). `None` samples (images a dataset could not decode)
    are dropped and counted: the batch always has `num_skipped`, a 0-dim int64 tensor the engine sums for its
    report (and must pop before calling the model). `labels` (B,) long is added when every kept sample has a label.
    A batch whose samples were all skipped holds only `num_skipped`.
    """
    kept = [sample for sample in samples if sample is not None]
    batch: dict[str, torch.Tensor] = {}
    if kept:
        first_views = kept[0][0]
        batch.update(_collate_index_masks([views for views, _ in kept]))
        for key, first in first_views.items():
            if key in INDEX_MASK_KEYS:
                continue
            num_views = len(first)
            try:
                flat = [views[key][v] for v in range(num_views) for views, _ in kept]
            except (KeyError, IndexError) as error:
                raise ValueError(f"samples disagree on their {key!r} views: every sample needs {num_views}") from error
            # One stack in view-major order, then a free reshape to (V, B, ...).
            batch[key] = torch.stack(flat).unflatten(0, (num_views, len(kept)))
        labels = [label for _, label in kept]
        if all(label is not None for label in labels):
            batch["labels"] = torch.as_tensor(labels, dtype=torch.long)
    batch["num_skipped"] = torch.tensor(len(samples) - len(kept), dtype=torch.long)
    return batch
