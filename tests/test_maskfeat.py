"""MaskFeat: torch HOG targets (hand cases and a per-pixel reference), blockwise masking, MSE on masked patches."""

import math

import numpy as np
import pytest
import torch
from transformers import AutoModel

import hf_ssl  # noqa: F401
from hf_ssl.modeling.maskfeat import MaskFeatConfig, MaskFeatForPreTraining, MaskFeatModel
from hf_ssl.modeling.targets import hog_features

BACKBONE = dict(model_type="ssl_vit", image_size=16, patch_size=4, num_channels=1, hidden_size=32,
                num_hidden_layers=2, num_attention_heads=2)  # fmt: skip


def reference_hog(image: np.ndarray, patch: int, cell: int, bins: int) -> np.ndarray:
    """Per-pixel loops: [-1, 0, 1] gradients with reflected borders, hard orientation bins over [0, pi)."""
    channels, height, width = image.shape
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    rows, cols = height // patch, width // patch
    per_side = patch // cell
    out = np.zeros((rows * cols, channels, per_side, per_side, bins))
    for c in range(channels):
        for y in range(height):
            for x in range(width):
                gx = padded[c, y + 1, x + 2] - padded[c, y + 1, x]
                gy = padded[c, y + 2, x + 1] - padded[c, y, x + 1]
                angle = math.atan2(gy, gx) % math.pi
                b = min(int(angle / math.pi * bins), bins - 1)
                patch_index = (y // patch) * cols + x // patch
                out[patch_index, c, (y % patch) // cell, (x % patch) // cell, b] += math.hypot(gx, gy)
    out = out.reshape(rows * cols, -1)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def test_hog_matches_a_per_pixel_reference():
    image = torch.randn(1, 2, 8, 8)
    ours = hog_features(image, patch_size=4, cell_size=2, num_bins=9)
    assert ours.shape == (1, 4, 2 * 4 * 9)
    np.testing.assert_allclose(ours[0].numpy(), reference_hog(image[0].double().numpy(), 4, 2, 9), atol=1e-5)


def test_hog_of_edges_hand_cases():
    vertical = torch.zeros(1, 1, 4, 4)
    vertical[..., 2:] = 1.0  # intensity rises along x: gradient angle 0 -> bin 0
    horizontal = vertical.transpose(-1, -2)  # rises along y: angle pi/2 -> bin 4 of 9
    for image, expected_bin in ((vertical, 0), (horizontal, 4)):
        hog = hog_features(image, patch_size=4, cell_size=4, num_bins=9)[0, 0]
        expected = torch.zeros(9)
        expected[expected_bin] = 1.0  # all votes in one bin, L2-normalised
        assert torch.allclose(hog, expected)
    flat = hog_features(torch.ones(1, 1, 4, 4), patch_size=4, cell_size=4)
    assert torch.equal(flat, torch.zeros_like(flat))  # no gradient, no votes


def test_hog_is_normalised_per_patch_and_checks_cells():
    hog = hog_features(torch.randn(2, 3, 8, 8), patch_size=4, cell_size=2)
    assert torch.allclose(hog.norm(dim=-1), torch.ones(2, 4))
    with pytest.raises(ValueError, match="cell_size"):
        hog_features(torch.randn(1, 1, 8, 8), patch_size=4, cell_size=3)


def test_config_defaults_and_validation():
    config = MaskFeatConfig()
    assert (config.mask_ratio, config.hog_cell_size, config.hog_num_bins, config.hog_dim) == (0.4, 8, 9, 108)
    with pytest.raises(ValueError, match="hog_cell_size"):
        MaskFeatConfig(backbone_config=BACKBONE, hog_cell_size=3)


def test_loss_is_mse_to_hog_of_masked_patches_only():
    torch.manual_seed(0)
    model = MaskFeatForPreTraining(MaskFeatConfig(backbone_config=BACKBONE, hog_cell_size=2, min_num_patches=2)).eval()
    images = torch.randn(1, 2, 1, 16, 16)
    masks = torch.zeros(1, 2, 16, dtype=torch.bool)
    masks[..., [0, 1, 4, 5]] = True  # a 2x2-patch block in the top-left corner
    loss = model(global_views=images, masks=masks).loss
    encoded = model.maskfeat(images[0], bool_masked_pos=masks[0]).last_hidden_state
    predictions = model.head(encoded[:, 1:])
    targets = hog_features(images[0], 4, 2)
    assert loss.item() == pytest.approx(((predictions - targets) ** 2).mean(-1)[masks[0]].mean().item(), rel=1e-5)

    # scrambling the predictions of visible patches leaves the loss unchanged
    def scramble_visible(module, args, output):
        return torch.where(masks[0].unsqueeze(-1), output, torch.randn_like(output))

    handle = model.head.register_forward_hook(scramble_visible)
    assert model(global_views=images, masks=masks).loss.item() == pytest.approx(loss.item(), rel=1e-6)
    handle.remove()


def test_block_masks_drawn_in_the_model_and_smoke_training(tmp_path):
    torch.manual_seed(0)
    model = MaskFeatForPreTraining(MaskFeatConfig(backbone_config=BACKBONE, hog_cell_size=2, min_num_patches=2))
    images = torch.randn(1, 8, 1, 16, 16)
    masks = torch.stack([model.mask_generator(4, 4, torch.Generator().manual_seed(i)) for i in range(8)])[None]
    assert torch.all(masks.sum(-1) <= round(0.4 * 16)) and torch.all(masks.sum(-1) >= 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = model(global_views=images, masks=masks).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert model(global_views=images).loss.isfinite()  # masks drawn here when the batch has none
    model.save_pretrained(tmp_path)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(encoder, MaskFeatModel)
    assert torch.allclose(encoder(images[0]).pooler_output, model.eval().maskfeat(images[0]).pooler_output, atol=1e-6)
