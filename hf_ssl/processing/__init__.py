"""Image processing: inference image processors (and the training views beside them)."""

from .image_processing import SSLImageProcessor, SSLImageProcessorPil, processor_for

__all__ = ["SSLImageProcessor", "SSLImageProcessorPil", "processor_for"]
