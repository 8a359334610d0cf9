"""Regression targets of masked image modeling, computed from the input pixels: patches (MAE, SimMIM) and HOG
(MaskFeat). Patch order is row-major over the patch grid, as the ViT's tokens; a patch's pixels are flattened as
(row, column, channel), MAE's `patchify` layout."""

import math

import torch
import torch.nn.functional as F


def patchify(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p * p * C) with N = (H / p) (W / p)."""
    batch, channels, height, width = pixel_values.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"image size {height}x{width} is not divisible by the patch size {patch_size}")
    rows, cols = height // patch_size, width // patch_size
    patches = pixel_values.reshape(batch, channels, rows, patch_size, cols, patch_size)
    return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, patch_size * patch_size * channels)


def unpatchify(patches: torch.Tensor, patch_size: int, grid_size: tuple[int, int]) -> torch.Tensor:
    """(B, N, p * p * C) -> (B, C, H, W), the inverse of `patchify`."""
    batch, num_patches, dim = patches.shape
    rows, cols = grid_size
    channels = dim // (patch_size * patch_size)
    if rows * cols != num_patches or channels * patch_size * patch_size != dim:
        raise ValueError(f"patches {tuple(patches.shape)} do not tile a {rows}x{cols} grid of {patch_size}-px patches")
    images = patches.reshape(batch, rows, cols, patch_size, patch_size, channels)
    return images.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, rows * patch_size, cols * patch_size)


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE's `norm_pix_loss` target: each patch minus its mean, over sqrt(unbiased variance + eps)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def hog_features(pixel_values: torch.Tensor, patch_size: int, cell_size: int, num_bins: int = 9) -> torch.Tensor:
    """Histograms of oriented gradients per patch, MaskFeat's target: (B, C, H, W) -> (B, N, C * cells * bins).

    Gradients by the [-1, 0, 1] filters (reflect-padded borders), per channel; each pixel votes its gradient
    magnitude into one of `num_bins` unsigned orientation bins over [0, pi); votes are summed over `cell_size` x
    `cell_size` cells; a patch's (channels x cells x bins) histogram is L2-normalised. No gradient flows (a target).
    """
    if patch_size % cell_size:
        raise ValueError(f"patch_size {patch_size} must be a multiple of the HOG cell_size {cell_size}")
    with torch.no_grad():
        batch, channels, height, width = pixel_values.shape
        image = F.pad(pixel_values.float().reshape(batch * channels, 1, height, width), (1, 1, 1, 1), mode="reflect")
        kernel = image.new_tensor([-1.0, 0.0, 1.0])
        grad_x = F.conv2d(image, kernel.view(1, 1, 1, 3))[:, :, 1:-1, :]
        grad_y = F.conv2d(image, kernel.view(1, 1, 3, 1))[:, :, :, 1:-1]
        magnitude = torch.hypot(grad_x, grad_y)
        orientation = torch.atan2(grad_y, grad_x).remainder(math.pi)  # unsigned, in [0, pi)
        bins = (orientation / math.pi * num_bins).long().clamp_(max=num_bins - 1)
        votes = magnitude.new_zeros(batch * channels, num_bins, height, width).scatter_(1, bins, magnitude)
        cells = F.avg_pool2d(votes, cell_size) * cell_size**2  # (B C, bins, H / cell, W / cell): sums per cell
        per_side = patch_size // cell_size
        cells = cells.reshape(batch, channels, num_bins, height // patch_size, per_side, width // patch_size, per_side)
        # -> (B, rows, cols, channels, cell row, cell col, bins), one histogram vector per patch
        histograms = cells.permute(0, 3, 5, 1, 4, 6, 2).flatten(3).flatten(1, 2)
        return F.normalize(histograms, dim=-1)
