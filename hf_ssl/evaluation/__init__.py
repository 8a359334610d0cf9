"""Evaluation of frozen features: extraction to safetensors, kNN, probes."""

from .extract import extract_features, find_images

__all__ = ["extract_features", "find_images"]
