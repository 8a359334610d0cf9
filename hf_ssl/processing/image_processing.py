"""Inference image processors: the standard SSL evaluation transform as a `transformers` v5 image processor.

Resize the shortest edge (bicubic), center crop, rescale to [0, 1], normalize with the ImageNet statistics: DINO's,
iBOT's and MAE's `Resize(256) + CenterCrop(224) + ToTensor + Normalize`. `SSLImageProcessor` runs on the
torchvision backend (the default of `AutoImageProcessor`), `SSLImageProcessorPil` on the PIL backend; both decode
PIL images with `hf_ssl.data.images.to_rgb` (16-bit, CMYK, palette and transparent images done right) and crop
like `torchvision`'s `CenterCrop`, so they give the same pixels up to resampling rounding.

`do_convert_grayscale=True` makes 1-channel `pixel_values` for models with `num_channels=1` (Fashion-MNIST).
"""

import os
from typing import Any

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as tvF
from transformers import PreTrainedConfig
from transformers.image_processing_backends import PilBackend, TorchvisionBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs

from ..data.images import load_image, to_rgb

# ITU-R 601-2 luma, the weights of PIL's `convert("L")` and torchvision's `rgb_to_grayscale`.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# The ImageNet statistics seen through the same luma transform, for 1-channel models.
GRAYSCALE_MEAN = (sum(w * m for w, m in zip(LUMA_WEIGHTS, IMAGENET_DEFAULT_MEAN)),)
GRAYSCALE_STD = (sum(w * s for w, s in zip(LUMA_WEIGHTS, IMAGENET_DEFAULT_STD)),)
# Shortest-edge resize over crop size of the standard evaluation transform (224 / 256).
CROP_RATIO = 0.875


class SSLImageProcessorKwargs(ImagesKwargs, total=False):
    """
    do_convert_grayscale (`bool`, *optional*):
        Output one luma channel (for `num_channels=1` models); `image_mean`/`image_std` must then have one value.
    """

    do_convert_grayscale: bool | None


def rgb_to_luma(image: Any) -> Any:
    """(1, H, W) luma of a channels-first (3, H, W) torch or numpy image, keeping its dtype (rounded for integers)."""
    luma = sum(weight * image[channel : channel + 1] for channel, weight in enumerate(LUMA_WEIGHTS))
    if isinstance(image, torch.Tensor):
        return luma if image.is_floating_point() else luma.round().clamp(0, 255).to(image.dtype)
    return luma if image.dtype.kind == "f" else luma.round().clip(0, 255).astype(image.dtype)


class _SSLImageProcessorMixin:
    """Defaults and behaviour shared by both backends; the backend class comes after it in the bases."""

    valid_kwargs = SSLImageProcessorKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    size = {"shortest_edge": 256}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_convert_grayscale = False

    def fetch_images(self, images: Any) -> Any:
        """Local paths are decoded with `load_image` (clear errors, 16-bit aware); URLs go to `transformers`."""
        if isinstance(images, (list, tuple)):
            return [self.fetch_images(image) for image in images]
        if isinstance(images, (str, os.PathLike)) and os.path.isfile(images):
            return load_image(images)
        return super().fetch_images(images)

    def process_image(
        self, image: Any, do_convert_rgb: bool | None = None, do_convert_grayscale: bool | None = None, **kwargs
    ) -> Any:
        """One image to channels-first RGB (or luma), decoding PIL modes with `to_rgb`."""
        if isinstance(image, Image.Image) and (do_convert_rgb or do_convert_grayscale):
            image = to_rgb(image)
            if do_convert_grayscale:
                image = image.convert("L")
            do_convert_rgb = False
        elif do_convert_grayscale:
            do_convert_rgb = True  # arrays and tensors: 1 or 4 channels -> RGB first, then luma
        image = super().process_image(image, do_convert_rgb=do_convert_rgb, **kwargs)
        if do_convert_grayscale and image.shape[0] == 3:
            image = rgb_to_luma(image)
        return image

    def center_crop(self, image: Any, size: SizeDict, **kwargs) -> Any:
        """`torchvision`'s center crop: offsets rounded as `CenterCrop` (the papers' eval) does, small images padded."""
        if isinstance(image, torch.Tensor):
            return tvF.center_crop(image, [size.height, size.width])
        return tvF.center_crop(torch.from_numpy(image), [size.height, size.width]).numpy()

    def _validate_preprocess_kwargs(
        self, do_convert_grayscale: bool | None = None, do_convert_rgb: bool | None = None, **kwargs
    ) -> None:
        super()._validate_preprocess_kwargs(**kwargs)
        if not kwargs.get("do_normalize") or not (do_convert_grayscale or do_convert_rgb):
            return
        num_channels = 1 if do_convert_grayscale else 3
        for name in ("image_mean", "image_std"):
            value = kwargs.get(name)
            if isinstance(value, (list, tuple)) and len(value) != num_channels:
                raise ValueError(
                    f"{name} has {len(value)} values but the images have {num_channels} channel(s) "
                    f"(do_convert_grayscale={bool(do_convert_grayscale)})"
                )


class SSLImageProcessor(_SSLImageProcessorMixin, TorchvisionBackend):
    """Shortest-edge bicubic resize, center crop, rescale, ImageNet normalization, on the torchvision backend."""


class SSLImageProcessorPil(_SSLImageProcessorMixin, PilBackend):
    """The same transform as `SSLImageProcessor` on the PIL backend (PIL resampling, NumPy arithmetic)."""


def processor_for(
    config: PreTrainedConfig, backend: str = "torchvision", **kwargs
) -> SSLImageProcessor | SSLImageProcessorPil:
    """
    The inference processor matching a model's input: crop to the backbone's `image_size`, resize the shortest edge
    to `round(image_size / 0.875)`, and grayscale output (with luma ImageNet statistics) for 1-channel models.
    `config` is a method config (with `backbone_config`) or a backbone config; `kwargs` override any setting.
    """
    classes = {"torchvision": SSLImageProcessor, "pil": SSLImageProcessorPil}
    if backend not in classes:
        raise ValueError(f"backend must be one of {sorted(classes)}, got {backend!r}")
    backbone_config = getattr(config, "backbone_config", None) or config
    image_size = getattr(backbone_config, "image_size", 224)
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    num_channels = getattr(backbone_config, "num_channels", 3)
    if num_channels not in (1, 3):
        raise ValueError(f"no inference processor for num_channels={num_channels}; only 1 and 3 are supported")
    settings = {
        "size": {"shortest_edge": round(min(height, width) / CROP_RATIO)},
        "crop_size": {"height": height, "width": width},
    }
    if num_channels == 1:
        settings.update(do_convert_grayscale=True, image_mean=GRAYSCALE_MEAN, image_std=GRAYSCALE_STD)
    return classes[backend](**{**settings, **kwargs})
