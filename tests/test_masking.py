"""Mask generators: exact counts, block shapes within bounds, ratio ranges, multi-block scales, determinism, collate."""

import math

import pytest
import torch

from hf_ssl.processing.masking import (
    BlockMaskGenerator,
    MaskedViews,
    MultiBlockMaskGenerator,
    RandomMaskGenerator,
    build_mask_generator,
)
from hf_ssl.processing.views import build_views, collate_views


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def bounding_box(mask2d: torch.Tensor) -> tuple[int, int]:
    rows, cols = mask2d.nonzero().unbind(1)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("ratio, grid", [(0.75, (14, 14)), (0.6, (7, 7)), (0.4, (3, 5)), (0.0, (4, 4)), (1.0, (4, 4))])
def test_random_mask_exact_count(ratio, grid):
    generator = seeded()
    for _ in range(5):
        mask = RandomMaskGenerator(ratio)(*grid, generator=generator)
        assert mask.dtype == torch.bool and mask.shape == (grid[0] * grid[1],)
        assert int(mask.sum()) == int(round(ratio * grid[0] * grid[1]))


def test_random_mask_units_are_whole_squares():
    # 8x8 patch grid in 2x2 units: 16 units, 10 masked -> 40 patches, every unit all-or-nothing.
    mask = RandomMaskGenerator(0.6, mask_unit=2)(8, 8, generator=seeded()).view(8, 8)
    assert int(mask.sum()) == int(round(0.6 * 16)) * 4
    units = mask.view(4, 2, 4, 2).permute(0, 2, 1, 3).reshape(16, 4)
    assert torch.all(units.all(1) | ~units.any(1))
    # 7x7 grid with 2x2 units: a 4x4 unit grid cropped to 7x7.
    cropped = RandomMaskGenerator(0.5, mask_unit=2)(7, 7, generator=seeded(1))
    assert cropped.shape == (49,)


def test_random_mask_is_uniform():
    counts = torch.zeros(16)
    generator = seeded()
    for _ in range(400):
        counts += RandomMaskGenerator(0.25)(4, 4, generator=generator).float()
    assert torch.allclose(counts / 400, torch.full((16,), 0.25), atol=0.08)


def test_block_mask_reaches_target_without_overshoot():
    generator = seeded()
    # BEiT: 14x14 grid, 40 %, blocks of at least 16 patches.
    counts = [int(BlockMaskGenerator(0.4, min_num_patches=16)(14, 14, generator=generator).sum()) for _ in range(30)]
    assert max(counts) <= round(0.4 * 196) and min(counts) >= round(0.4 * 196) - 4


def test_block_mask_shapes_within_bounds():
    """Each block BEiT's algorithm places is a rectangle of area in [min, budget] and aspect in [0.3, 1/0.3]."""
    min_aspect, generator = 0.3, seeded(3)
    masker = BlockMaskGenerator(0.4, min_num_patches=16, min_aspect=min_aspect)
    for _ in range(50):
        mask = torch.zeros(14, 14, dtype=torch.bool)
        added = masker._add_block(mask, 78, generator)
        assert added == int(mask.sum()) > 0
        height, width = bounding_box(mask)
        assert height * width == added and height < 14 and width < 14  # one rectangle strictly inside the grid
        # area uniform in [16, 78] and aspect log-uniform in [0.3, 1/0.3], up to rounding of both sides.
        assert (math.sqrt(16) - 1) ** 2 <= added <= 78
        assert (height - 0.5) / (width + 0.5) <= 1 / min_aspect and (height + 0.5) / (width - 0.5) >= min_aspect


def test_block_mask_ratio_range_sampled_per_image():
    generator = seeded()
    masker = BlockMaskGenerator((0.1, 0.5), min_num_patches=4)
    counts = [int(masker(14, 14, generator=generator).sum()) for _ in range(60)]
    assert max(counts) <= round(0.5 * 196) and min(counts) >= 4
    assert max(counts) - min(counts) > 30  # the ratio varies per image, not one fixed count


def test_multiblock_scales_and_disjoint_context():
    generator = seeded()
    masker = MultiBlockMaskGenerator()
    for _ in range(30):
        context, targets = masker(14, 14, generator=generator)
        assert len(targets) == 4
        for target in targets:
            assert target.dtype == torch.long and torch.all(target[1:] > target[:-1])
            grid = torch.zeros(196, dtype=torch.bool)
            grid[target] = True
            height, width = bounding_box(grid.view(14, 14))
            assert height * width == len(target)  # a rectangle
            # scale 0.15-0.2 of 196 (29.4-39.2) and aspect 0.75-1.5, up to rounding of both sides.
            assert (math.sqrt(29.4 * 0.75) - 0.5) ** 2 <= len(target) <= (math.sqrt(39.2 * 1.5) + 0.5) ** 2
            assert 0.75 * (width - 0.5) / (width + 0.5) <= height / width <= 1.5 * (height + 0.5) / (height - 0.5)
            assert not set(context.tolist()) & set(target.tolist())
        # the context block (before removing targets) covers 85-100 % of the grid, shrunk inside a 13x13 box.
        assert 4 <= len(context) <= 13 * 13


def test_multiblock_overlap_allowed_keeps_full_context_block():
    context, targets = MultiBlockMaskGenerator(allow_overlap=True, context_scale=(1.0, 1.0))(8, 8, generator=seeded())
    assert len(context) == 7 * 7  # a full-scale square block fits strictly inside the grid: 7x7


def test_multiblock_impossible_settings_raise():
    with pytest.raises(ValueError, match="no context block"):
        MultiBlockMaskGenerator(num_targets=4, target_scale=(0.5, 0.5), min_keep=10)(4, 4, generator=seeded())


@pytest.mark.parametrize(
    "masker",
    [RandomMaskGenerator(0.75), RandomMaskGenerator(0.5, mask_unit=2), BlockMaskGenerator((0.1, 0.5)),
     MultiBlockMaskGenerator()],
)  # fmt: skip
def test_determinism_with_seeded_generator(masker):
    first, second = masker(10, 10, generator=seeded(7)), masker(10, 10, generator=seeded(7))
    other = masker(10, 10, generator=seeded(8))
    if isinstance(first, tuple):
        first, second, other = (torch.cat([c, *t]) for c, t in (first, second, other))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: RandomMaskGenerator(1.5), "mask_ratio"),
        (lambda: RandomMaskGenerator(0.5, mask_unit=0), "mask_unit"),
        (lambda: BlockMaskGenerator((0.5, 0.1)), "mask_ratio"),
        (lambda: BlockMaskGenerator(0.4, min_aspect=0), "min_aspect"),
        (lambda: MultiBlockMaskGenerator(target_scale=(0.2, 1.5)), "target_scale"),
        (lambda: RandomMaskGenerator(0.5)(0, 4), "grid_height"),
        (lambda: build_mask_generator("spiral"), "unknown masking type"),
        (lambda: build_mask_generator("random", ratio=0.5), "bad option"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_masked_views_and_collate_boolean_masks():
    image = torch.randint(0, 256, (1, 32, 32), dtype=torch.uint8)
    views = build_views(
        "multi_crop", global_crop_size=16, local_crop_size=8, num_local_crops=2, num_channels=1,
        masking={"type": "random", "patch_size": 4, "mask_ratio": 0.5},
    )  # fmt: skip
    assert isinstance(views, MaskedViews) and views.grid_size == (4, 4)
    batch = collate_views([(views(image), 0) for _ in range(3)])
    assert batch["masks"].shape == (2, 3, 16) and batch["masks"].dtype == torch.bool
    assert torch.all(batch["masks"].sum(-1) == 8)
    assert batch["global_views"].shape == (2, 3, 1, 16, 16) and batch["local_views"].shape == (2, 3, 1, 8, 8)


def test_masked_views_mask_probability():
    torch.manual_seed(0)
    views = MaskedViews(lambda image: {"global_views": [image, image]}, RandomMaskGenerator(0.5), 4, 0.5)
    masked = torch.stack([views(torch.zeros(1))["masks"].any(-1) for _ in range(200)]).float().mean()
    assert 0.35 < masked < 0.65


def test_collate_truncates_multiblock_indices_to_shortest():
    samples = [
        ({"global_views": [torch.zeros(1, 4, 4)], "context_indices": [torch.arange(n)],
          "target_indices": [[torch.arange(m), torch.arange(m + 1)]]}, None)
        for n, m in ((5, 3), (7, 2), (6, 4))
    ]  # fmt: skip
    batch = collate_views(samples)
    assert batch["context_indices"].shape == (1, 3, 5)
    assert batch["target_indices"].shape == (1, 2, 3, 2)
    assert torch.equal(batch["target_indices"][0, 1, 2], torch.tensor([0, 1]))


def test_build_views_multiblock_and_bad_masking():
    image = torch.randint(0, 256, (1, 32, 32), dtype=torch.uint8)
    views = build_views("two_view", size=28, num_channels=1, masking={"type": "multiblock", "patch_size": 4})
    batch = collate_views([(views(image), None) for _ in range(2)])
    assert batch["context_indices"].shape[:2] == (2, 2) and batch["target_indices"].shape[:3] == (2, 4, 2)
    # truncation keeps subsets, so each sample's context stays disjoint from its targets
    per_sample_targets = batch["target_indices"].permute(0, 2, 1, 3).flatten(0, 1)
    for context, targets in zip(batch["context_indices"].flatten(0, 1), per_sample_targets):
        assert not set(context.tolist()) & set(targets.flatten().tolist())
    with pytest.raises(ValueError, match="patch_size"):
        build_views("two_view", size=28, masking={"type": "random", "patch_size": 5})
    with pytest.raises(ValueError, match="exactly one"):
        build_views("two_view", size=28, masking={"type": "random"})
