"""Robust image decoding: every PIL mode to 8-bit RGB, and a clear `ValueError` naming the file for anything broken.

`load_image` is what datasets, `hf-ssl extract` and the image processors use, so an image gives the same pixels
whichever way it enters the package. Conventions:

- transparency (RGBA, LA, PA, palette or L/RGB images with a transparent colour) is composited on white, as
  `transformers`' `convert_to_rgb` does;
- 16-bit and 32-bit integer images (`I;16`, `I;16B`, `I;16L`, `I`) are mapped from the 16-bit range to 8 bits
  (65535 -> 255, 32768 -> 128) instead of being clipped at 255 by PIL's plain `convert`; an `I` image with values
  outside [0, 65535], and a float (`F`) image outside [0, 1], is stretched from its own min..max to 0..255;
- animated images (GIF, APNG, WebP) give their first frame; EXIF orientation is applied;
- PIL's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`) is enforced as an error, not a warning.
"""

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
UINT16_MAX = 65535


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    """An 8-bit `L` image from a 16/32-bit integer or float image, scaled by its range rather than clipped."""
    values = np.asarray(image).astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif image.mode != "F" and low >= 0 and high <= UINT16_MAX:
        scaled = values * (255.0 / UINT16_MAX)
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), mode="L")


def _has_transparency(image: Image.Image) -> bool:
    bands = image.getbands()
    return "A" in bands or "a" in bands or image.info.get("transparency") is not None


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB, following the module's conventions (may return `image` itself when already RGB)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"to_rgb expects a PIL.Image.Image, got {type(image).__name__}")
    if image.width == 0 or image.height == 0:
        raise ValueError(f"image has zero size {image.size}")
    if image.mode in HIGH_BIT_DEPTH_MODES:
        image = _high_bit_depth_to_l(image)
    if _has_transparency(image):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _open_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode the first frame of the file fully (so truncation shows now) and return a detached RGB copy."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image.seek(0)
            image.load()
            rgb = to_rgb(ImageOps.exif_transpose(image))
            return rgb.copy() if rgb is image else rgb


def load_image(image: str | os.PathLike | Image.Image) -> Image.Image:
    """An 8-bit RGB `PIL.Image` from a path or a PIL image; `ValueError` naming the file if it cannot be decoded."""
    if isinstance(image, Image.Image):
        return to_rgb(ImageOps.exif_transpose(image))
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(f"load_image expects a path or a PIL.Image.Image, got {type(image).__name__}")
    path = os.fspath(image)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such image file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file (0 bytes)")
    try:
        return _open_rgb(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(f"{path}: refused as a possible decompression bomb ({error})") from error
    except UnidentifiedImageError as error:
        raise ValueError(f"{path}: not an image PIL can read") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ValueError(f"{path}: corrupt, truncated or invalid image ({error})") from error
