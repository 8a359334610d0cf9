"""Datasets and robust image decoding."""

from .images import load_image, to_rgb

__all__ = ["load_image", "to_rgb"]
