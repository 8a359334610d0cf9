"""Patch-mask generators for masked image modeling, sampled per image (in the data-loader workers or in a model).

All generators take the patch grid `(grid_height, grid_width)` and an optional `torch.Generator`, and draw every
random number from it (the global torch RNG when None, which the DataLoader seeds differently per worker):

- `RandomMaskGenerator`: uniform random patches (MAE, SimMIM, MSN, data2vec), exactly `round(ratio * N)` masked;
  `mask_unit > 1` masks square units of `mask_unit x mask_unit` patches (SimMIM's 32-px mask patches).
- `BlockMaskGenerator`: BEiT's blockwise masking (BEiT Algorithm 1), rectangles of random area and aspect ratio until
  the target count; a `(min, max)` ratio is sampled per image (iBOT).
- `MultiBlockMaskGenerator`: I-JEPA's multi-block masking, M target blocks and one context block from which the
  targets are removed; returns index lists, not a boolean mask.
- `MaskedViews`: wraps a views transform and adds the masks of its global views to the sample.

Boolean masks are flat `(grid_height * grid_width,)` in row-major patch order, True = masked.
"""

import math
from collections.abc import Sequence

import torch


def _check_grid(grid_height, grid_width) -> int:
    for name, value in (("grid_height", grid_height), ("grid_width", grid_width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return grid_height * grid_width


def _check_ratio(value, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_range(value, name: str, low: float, high: float = math.inf) -> tuple[float, float]:
    if not isinstance(value, Sequence) or len(value) != 2 or not all(isinstance(v, (int, float)) for v in value):
        raise ValueError(f"{name} must be a pair of numbers, got {value!r}")
    first, second = float(value[0]), float(value[1])
    if not low <= first <= second <= high:
        raise ValueError(f"{name} must be an increasing pair inside [{low}, {high}], got {value!r}")
    return first, second


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(high: int, generator: torch.Generator | None) -> int:
    """A uniform int in [0, high]."""
    return int(torch.randint(high + 1, (), generator=generator))


class RandomMaskGenerator:
    """Masks `round(mask_ratio * num_units)` uniformly drawn units; a unit is `mask_unit x mask_unit` patches.

    `mask_unit=1` is MAE's per-patch masking: exactly `int(round(mask_ratio * N))` of the N patches are masked.
    SimMIM masks 32-px squares of a 4-px-patch Swin (`mask_unit=8`) or 16-px-patch ViT (`mask_unit=2`): the unit
    grid covers `ceil(H / unit) x ceil(W / unit)` units and is cropped to the patch grid after upsampling, so the
    count is exact at unit level (and at patch level when the grid divides by the unit).
    """

    def __init__(self, mask_ratio: float = 0.75, mask_unit: int = 1):
        self.mask_ratio = _check_ratio(mask_ratio, "mask_ratio")
        if not isinstance(mask_unit, int) or isinstance(mask_unit, bool) or mask_unit < 1:
            raise ValueError(f"mask_unit (patches per side of one mask unit) must be a positive int, got {mask_unit!r}")
        self.mask_unit = mask_unit

    def __call__(self, grid_height: int, grid_width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_grid(grid_height, grid_width)
        units_h, units_w = math.ceil(grid_height / self.mask_unit), math.ceil(grid_width / self.mask_unit)
        num_units = units_h * units_w
        num_masked = int(round(self.mask_ratio * num_units))
        mask = torch.zeros(num_units, dtype=torch.bool)
        mask[torch.randperm(num_units, generator=generator)[:num_masked]] = True
        if self.mask_unit == 1:
            return mask
        mask = mask.view(units_h, units_w).repeat_interleave(self.mask_unit, 0).repeat_interleave(self.mask_unit, 1)
        return mask[:grid_height, :grid_width].reshape(-1)

    def __repr__(self) -> str:
        return f"RandomMaskGenerator(mask_ratio={self.mask_ratio}, mask_unit={self.mask_unit})"


class BlockMaskGenerator:
    """BEiT's blockwise masking: add random rectangles until about `mask_ratio * N` patches are masked.

    Each step draws a block area uniformly in `[min_num_patches, remaining]` (capped by `max_num_patches`) and a
    log-uniform aspect ratio in `[min_aspect, max_aspect]` (default `1 / min_aspect`), places it uniformly inside the
    grid and keeps it if it masks at least one new patch without overshooting the target (10 tries per step, as
    BEiT's generator). Stops when the target is reached or no block fits, so the count never exceeds the target.
    `mask_ratio` is a number (BEiT: 0.4) or a `(min, max)` range sampled uniformly per image (iBOT: (0.1, 0.5)).
    """

    max_tries = 10

    def __init__(
        self,
        mask_ratio: float | Sequence[float] = 0.4,
        min_num_patches: int = 4,
        max_num_patches: int | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
    ):
        if isinstance(mask_ratio, Sequence):
            self.ratio_range = _check_range(mask_ratio, "mask_ratio", 0.0, 1.0)
        else:
            ratio = _check_ratio(mask_ratio, "mask_ratio")
            self.ratio_range = (ratio, ratio)
        if not isinstance(min_num_patches, int) or min_num_patches < 1:
            raise ValueError(f"min_num_patches must be a positive int, got {min_num_patches!r}")
        if max_num_patches is not None and (not isinstance(max_num_patches, int) or max_num_patches < min_num_patches):
            raise ValueError(f"max_num_patches must be None or an int >= min_num_patches, got {max_num_patches!r}")
        if not isinstance(min_aspect, (int, float)) or min_aspect <= 0:
            raise ValueError(f"min_aspect must be a positive number, got {min_aspect!r}")
        max_aspect = 1.0 / min_aspect if max_aspect is None else max_aspect
        if not isinstance(max_aspect, (int, float)) or max_aspect < min_aspect:
            raise ValueError(f"max_aspect must be a number >= min_aspect={min_aspect}, got {max_aspect!r}")
        self.min_num_patches, self.max_num_patches = min_num_patches, max_num_patches
        self.min_aspect, self.max_aspect = float(min_aspect), float(max_aspect)

    def _add_block(self, mask: torch.Tensor, budget: int, generator) -> int:
        """Try to mask one new rectangle with 1..`budget` new patches; returns how many patches it added (0 = none).

        The area is drawn between `min_num_patches` and `budget` (in either order, near the end of the mask the budget
        is the smaller), so small final blocks or blocks overlapping masked patches fill up to the target.
        """
        grid_height, grid_width = mask.shape
        log_aspect = (math.log(self.min_aspect), math.log(self.max_aspect))
        for _ in range(self.max_tries):
            area = _uniform(self.min_num_patches, budget, generator)
            aspect = math.exp(_uniform(*log_aspect, generator))
            height, width = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if not (0 < height < grid_height and 0 < width < grid_width):
                continue
            top, left = _randint(grid_height - height, generator), _randint(grid_width - width, generator)
            block = mask[top : top + height, left : left + width]
            added = height * width - int(block.sum())
            if 0 < added <= budget:
                block.fill_(True)
                return added
        return 0

    def __call__(self, grid_height: int, grid_width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        num_patches = _check_grid(grid_height, grid_width)
        target = int(round(_uniform(*self.ratio_range, generator) * num_patches))
        mask = torch.zeros(grid_height, grid_width, dtype=torch.bool)
        count = 0
        while count < target:
            budget = target - count if self.max_num_patches is None else min(target - count, self.max_num_patches)
            added = self._add_block(mask, budget, generator)
            if added == 0:
                break
            count += added
        return mask.reshape(-1)

    def __repr__(self) -> str:
        return (
            f"BlockMaskGenerator(mask_ratio={self.ratio_range}, min_num_patches={self.min_num_patches}, "
            f"max_num_patches={self.max_num_patches}, min_aspect={self.min_aspect}, max_aspect={self.max_aspect})"
        )


class MultiBlockMaskGenerator:
    """I-JEPA's multi-block masking: `num_targets` target blocks and one context block with the targets removed.

    A block of scale `s` (fraction of the grid, uniform in the scale range) and aspect `a` (uniform in the aspect
    range) is `round(sqrt(s N a)) x round(sqrt(s N / a))` patches, shrunk to fit strictly inside the grid, placed
    uniformly. Targets (scale 0.15-0.2, aspect 0.75-1.5) may overlap each other; the context block (scale
    0.85-1.0, square) keeps only patches outside every target unless `allow_overlap`. A draw whose context keeps
    fewer than `min_keep` patches (or a target fewer than `min_keep`) is redrawn, up to `max_tries` times.

    Returns `(context_indices, target_indices)`: a sorted LongTensor (N_c,) of context patch indices and a list of
    `num_targets` sorted LongTensors of target patch indices (row-major flat indices into the patch grid).
    """

    max_tries = 100

    def __init__(
        self,
        num_targets: int = 4,
        target_scale: Sequence[float] = (0.15, 0.2),
        target_aspect: Sequence[float] = (0.75, 1.5),
        context_scale: Sequence[float] = (0.85, 1.0),
        context_aspect: Sequence[float] = (1.0, 1.0),
        min_keep: int = 4,
        allow_overlap: bool = False,
    ):
        if not isinstance(num_targets, int) or isinstance(num_targets, bool) or num_targets < 1:
            raise ValueError(f"num_targets must be a positive int, got {num_targets!r}")
        if not isinstance(min_keep, int) or isinstance(min_keep, bool) or min_keep < 1:
            raise ValueError(f"min_keep must be a positive int, got {min_keep!r}")
        self.num_targets, self.min_keep, self.allow_overlap = num_targets, min_keep, bool(allow_overlap)
        self.target_scale = _check_range(target_scale, "target_scale", 0.0, 1.0)
        self.context_scale = _check_range(context_scale, "context_scale", 0.0, 1.0)
        self.target_aspect = _check_range(target_aspect, "target_aspect", 1e-6)
        self.context_aspect = _check_range(context_aspect, "context_aspect", 1e-6)

    @staticmethod
    def _block(grid_height, grid_width, scale, aspect, generator) -> torch.Tensor:
        """A (grid_height, grid_width) bool mask holding one randomly placed block."""
        area = grid_height * grid_width * _uniform(*scale, generator)
        ratio = _uniform(*aspect, generator)
        height = min(max(int(round(math.sqrt(area * ratio))), 1), max(grid_height - 1, 1))
        width = min(max(int(round(math.sqrt(area / ratio))), 1), max(grid_width - 1, 1))
        top, left = _randint(grid_height - height, generator), _randint(grid_width - width, generator)
        block = torch.zeros(grid_height, grid_width, dtype=torch.bool)
        block[top : top + height, left : left + width] = True
        return block

    def __call__(
        self, grid_height: int, grid_width: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        _check_grid(grid_height, grid_width)
        for _ in range(self.max_tries):
            targets = [
                self._block(grid_height, grid_width, self.target_scale, self.target_aspect, generator)
                for _ in range(self.num_targets)
            ]
            context = self._block(grid_height, grid_width, self.context_scale, self.context_aspect, generator)
            if not self.allow_overlap:
                context &= ~torch.stack(targets).any(0)
            if int(context.sum()) >= self.min_keep and all(int(t.sum()) >= self.min_keep for t in targets):
                return context.reshape(-1).nonzero().squeeze(1), [t.reshape(-1).nonzero().squeeze(1) for t in targets]
        raise ValueError(
            f"no context block with {self.min_keep}+ patches outside {self.num_targets} targets fits a "
            f"{grid_height}x{grid_width} grid after {self.max_tries} draws; lower num_targets/target_scale or min_keep"
        )

    def __repr__(self) -> str:
        return (
            f"MultiBlockMaskGenerator(num_targets={self.num_targets}, target_scale={self.target_scale}, "
            f"target_aspect={self.target_aspect}, context_scale={self.context_scale}, "
            f"context_aspect={self.context_aspect}, min_keep={self.min_keep}, allow_overlap={self.allow_overlap})"
        )


def sample_masks(
    mask_generator, batch_size: int, grid_height: int, grid_width: int, device=None, generator=None
) -> torch.Tensor:
    """(batch_size, grid_height * grid_width) boolean masks, one draw per image (for models given no `masks`)."""
    masks = torch.stack([mask_generator(grid_height, grid_width, generator=generator) for _ in range(batch_size)])
    return masks.to(device)


MASK_GENERATORS = {"random": RandomMaskGenerator, "block": BlockMaskGenerator, "multiblock": MultiBlockMaskGenerator}


def build_mask_generator(type: str, **kwargs):
    """A mask generator from a recipe's `masking:` options: `type` (`random` | `block` | `multiblock`) and arguments."""
    if type not in MASK_GENERATORS:
        raise ValueError(f"unknown masking type {type!r}; expected one of {sorted(MASK_GENERATORS)}")
    try:
        return MASK_GENERATORS[type](**kwargs)
    except TypeError as error:
        raise ValueError(f"bad option for masking type {type!r}: {error}") from error


class MaskedViews:
    """A views transform whose samples also carry the masks of their global views, drawn in the data-loader workers.

    Boolean generators add `masks`: a bool tensor (V_g, N) (`collate_views` stacks it to (V_g, B, N)); with
    `mask_probability < 1` each view is masked with that probability and otherwise gets an all-False mask
    (iBOT/DINOv2 mask about half of the images). `MultiBlockMaskGenerator` adds `context_indices` (a list of V_g
    LongTensors) and `target_indices` (a list of V_g lists of `num_targets` LongTensors), which `collate_views`
    truncates to the batch's shortest, as I-JEPA's collator does.
    `grid_size` is the global views' patch grid: an int or `(grid_height, grid_width)`.
    """

    def __init__(self, views_transform, mask_generator, grid_size: int | Sequence[int], mask_probability: float = 1.0):
        if not callable(views_transform) or not callable(mask_generator):
            raise TypeError("views_transform and mask_generator must be callables")
        grid = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
        if len(grid) != 2:
            raise ValueError(f"grid_size must be an int or a (height, width) pair, got {grid_size!r}")
        _check_grid(*grid)
        self.views_transform, self.mask_generator, self.grid_size = views_transform, mask_generator, grid
        self.mask_probability = _check_ratio(mask_probability, "mask_probability")
        if isinstance(mask_generator, MultiBlockMaskGenerator) and self.mask_probability < 1:
            raise ValueError("mask_probability applies to boolean masks, not to multi-block index masks")

    @property
    def mean(self):
        """The normalisation of the wrapped views (the engine saves it with the inference image processor)."""
        return getattr(self.views_transform, "mean", None)

    @property
    def std(self):
        return getattr(self.views_transform, "std", None)

    def _boolean_mask(self) -> torch.Tensor:
        if self.mask_probability < 1 and torch.rand(()).item() >= self.mask_probability:
            return torch.zeros(self.grid_size[0] * self.grid_size[1], dtype=torch.bool)
        return self.mask_generator(*self.grid_size)

    def __call__(self, image) -> dict:
        views = self.views_transform(image)
        num_views = len(views["global_views"])
        if isinstance(self.mask_generator, MultiBlockMaskGenerator):
            draws = [self.mask_generator(*self.grid_size) for _ in range(num_views)]
            views["context_indices"] = [context for context, _ in draws]
            views["target_indices"] = [targets for _, targets in draws]
        else:
            views["masks"] = torch.stack([self._boolean_mask() for _ in range(num_views)])
        return views

    def __repr__(self) -> str:
        return (
            f"MaskedViews({self.views_transform!r}, {self.mask_generator!r}, grid_size={self.grid_size}, "
            f"mask_probability={self.mask_probability})"
        )


def flatten_masked_views(
    global_views: torch.Tensor, masks: torch.Tensor | None, mask_generator, patch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`global_views` (V, B, C, H, W) and their `masks` (V, B, N) as (V B, C, H, W) images and (V B, N) masks.

    Masks drawn in the data loader (`MaskedViews`) are used as given; without them one mask per image is drawn here
    with `mask_generator` (on the CPU, then moved to the images' device).
    """
    if global_views.ndim != 5:
        raise ValueError(
            f"global_views must be (views, batch, channels, height, width), got {tuple(global_views.shape)}"
        )
    pixel_values = global_views.flatten(0, 1)
    height, width = pixel_values.shape[-2:]
    if height % patch_size or width % patch_size:
        raise ValueError(f"image size {height}x{width} is not divisible by the patch size {patch_size}")
    grid = (height // patch_size, width // patch_size)
    if masks is None:
        return pixel_values, sample_masks(mask_generator, pixel_values.shape[0], *grid, device=pixel_values.device)
    expected = (*global_views.shape[:2], grid[0] * grid[1])
    if tuple(masks.shape) != expected or masks.dtype != torch.bool:
        raise ValueError(f"masks must be a bool tensor of shape {expected}, got {masks.dtype} {tuple(masks.shape)}")
    return pixel_values, masks.flatten(0, 1)
