"""Training views: shapes, normalization, crop/flip bounds, channels, determinism, collate, build_views."""

import math

import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from hf_ssl.processing.views import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiCropTransform,
    SeparableGaussianBlur,
    TwoViewTransform,
    blur_kernel_size,
    build_views,
    collate_views,
)

# Every random augmentation off: a view is then crop + resize + normalize only.
NO_AUGMENTATION = dict(
    hflip_prob=0.0, color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0, interpolation="nearest"
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP waits on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_image(channels=3, height=40, width=50, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (channels, height, width), dtype=torch.uint8, generator=generator)


def coordinate_image(size=200):
    """RGB image whose red channel is the row index and green channel the column index of each pixel."""
    rows = torch.arange(size, dtype=torch.uint8).view(size, 1).expand(size, size)
    return torch.stack([rows, rows.T, torch.zeros_like(rows)])


def to_pixels(view, mean=(0.0,) * 3, std=(1.0,) * 3):
    """Undo normalization: uint8-valued pixels back from a float view."""
    mean, std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    return torch.round((view * std + mean) * 255).to(torch.int64)


def test_two_view_shapes_dtypes_and_value_range():
    transform = TwoViewTransform(size=16)
    views = transform(random_image())
    assert list(views) == ["global_views"] and len(views["global_views"]) == 2
    low = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    high = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    for view in views["global_views"]:
        assert view.shape == (3, 16, 16) and view.dtype == torch.float32
        for c in range(3):
            assert low[c] - 1e-5 <= view[c].min() and view[c].max() <= high[c] + 1e-5


def test_multi_crop_shapes_and_no_local_key_without_local_crops():
    transform = MultiCropTransform(global_crop_size=32, local_crop_size=16, num_local_crops=3)
    views = transform(random_image())
    assert [tuple(v.shape) for v in views["global_views"]] == [(3, 32, 32)] * 2
    assert [tuple(v.shape) for v in views["local_views"]] == [(3, 16, 16)] * 3
    assert set(MultiCropTransform(global_crop_size=32, num_local_crops=0)(random_image())) == {"global_views"}


def test_normalization_is_exact_without_augmentation():
    image = random_image(height=16, width=16)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    transform = TwoViewTransform(size=16, scale=(1, 1), ratio=(1, 1), mean=mean, std=std, **NO_AUGMENTATION)
    expected = (image.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    for view in transform(image)["global_views"]:
        torch.testing.assert_close(view, expected)


def test_same_seed_same_views_and_pil_equals_tensor():
    image = random_image()
    transform = MultiCropTransform(global_crop_size=24, local_crop_size=12, num_local_crops=2)
    torch.manual_seed(0)
    first = transform(image)
    torch.manual_seed(0)
    again = transform(Image.fromarray(image.permute(1, 2, 0).numpy()))
    torch.manual_seed(1)
    other = transform(image)
    for key in first:
        for a, b in zip(first[key], again[key]):
            torch.testing.assert_close(a, b)
    assert not torch.equal(first["global_views"][0], other["global_views"][0])


@pytest.mark.parametrize("kind, scale", [("global", (0.4, 1.0)), ("local", (0.05, 0.4))])
def test_crop_area_and_aspect_ratio_stay_in_bounds(kind, scale):
    """Read each crop's box from a coordinate image (nearest upsampling keeps every source row and column)."""
    size = 200
    transform = MultiCropTransform(
        global_crop_size=size, local_crop_size=size, num_local_crops=1, mean=(0, 0, 0), std=(1, 1, 1),
        global_blur_prob=0.0, global_solarize_prob=0.0, local_blur_prob=0.0, **{
            k: v for k, v in NO_AUGMENTATION.items() if k not in ("blur_prob", "solarize_prob")
        },
    )  # fmt: skip
    torch.manual_seed(0)
    areas = []
    for _ in range(40):
        view = transform(coordinate_image(size))[f"{kind}_views"][0]
        pixels = to_pixels(view)
        rows, cols = pixels[0].unique(), pixels[1].unique()
        assert torch.equal(rows, torch.arange(rows[0], rows[-1] + 1))  # one contiguous box
        assert torch.equal(cols, torch.arange(cols[0], cols[-1] + 1))
        height, width = len(rows), len(cols)
        area = height * width / size**2
        # rounding of the sampled height/width to whole pixels moves the area by at most ~1 pixel per side
        tolerance = (height + width + 1) / size**2
        assert scale[0] - tolerance <= area <= scale[1] + tolerance
        assert 3 / 4 - 2 / min(height, width) <= width / height <= 4 / 3 + 2 / min(height, width)
        areas.append(area)
    assert max(areas) - min(areas) > 0.3 * (scale[1] - scale[0])  # really random, not a fixed crop


def test_horizontal_flip_probability_and_effect():
    image = coordinate_image(32)
    never = TwoViewTransform(size=32, scale=(1, 1), ratio=(1, 1), mean=(0, 0, 0), std=(1, 1, 1), **NO_AUGMENTATION)
    always = TwoViewTransform(
        size=32, scale=(1, 1), ratio=(1, 1), mean=(0, 0, 0), std=(1, 1, 1), **{**NO_AUGMENTATION, "hflip_prob": 1.0}
    )
    assert torch.equal(to_pixels(never(image)["global_views"][0]), image.long())
    assert torch.equal(to_pixels(always(image)["global_views"][0]), image.flip(-1).long())
    half = TwoViewTransform(
        size=32, scale=(1, 1), ratio=(1, 1), mean=(0, 0, 0), std=(1, 1, 1), **{**NO_AUGMENTATION, "hflip_prob": 0.5}
    )
    torch.manual_seed(0)
    flipped = sum(int(to_pixels(half(image)["global_views"][0])[1, 0, 0] == 31) for _ in range(200))
    assert 70 <= flipped <= 130  # Binomial(200, 0.5): +-4.2 standard deviations


def test_solarize_inverts_bright_pixels_of_the_chosen_view():
    image = random_image(height=16, width=16)
    options = {**NO_AUGMENTATION, "solarize_prob": (0.0, 1.0)}
    views = TwoViewTransform(size=16, scale=(1, 1), ratio=(1, 1), mean=(0, 0, 0), std=(1, 1, 1), **options)(image)
    assert torch.equal(to_pixels(views["global_views"][0]), image.long())
    expected = torch.where(image >= 128, 255 - image, image).long()
    assert torch.equal(to_pixels(views["global_views"][1]), expected)


def test_channels_one_stays_one_and_becomes_three():
    gray = random_image(channels=1, height=16, width=16)
    one = TwoViewTransform(size=16, num_channels=1, mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD)(gray)
    assert all(v.shape == (1, 16, 16) for v in one["global_views"])
    three = TwoViewTransform(size=16, scale=(1, 1), ratio=(1, 1), num_channels=3, **NO_AUGMENTATION)(gray)["global_views"][0]
    assert three.shape == (3, 16, 16)
    pixels = to_pixels(three, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(pixels[0], pixels[2]) and torch.equal(pixels[0], gray[0].long())
    multi = MultiCropTransform(global_crop_size=16, local_crop_size=8, num_local_crops=2, num_channels=1)(gray)
    assert all(v.shape[0] == 1 for key in multi for v in multi[key])


def test_rgb_input_to_one_channel_uses_luma():
    image = random_image(height=16, width=16)
    view = TwoViewTransform(size=16, scale=(1, 1), ratio=(1, 1), num_channels=1, mean=0, std=1, **NO_AUGMENTATION)
    expected = TF.rgb_to_grayscale(image, num_output_channels=1).long()
    assert torch.equal(to_pixels(view(image)["global_views"][0], (0.0,), (1.0,)), expected)


def test_separable_blur_equals_torchvision_gaussian_blur():
    image = random_image(height=37, width=45)
    for kernel in (3, 9, 23):
        blur = SeparableGaussianBlur(kernel, sigma=(0.1, 2.0))
        torch.manual_seed(kernel)
        ours = blur(image)
        torch.manual_seed(kernel)
        sigma = torch.empty(1).uniform_(0.1, 2.0).item()  # the draw torchvision's make_params makes
        reference = TF.gaussian_blur(image, [kernel, kernel], [sigma, sigma])
        assert ours.dtype == torch.uint8 and (ours.int() - reference.int()).abs().max() <= 1
        floats = image.float() / 255
        torch.manual_seed(kernel)
        torch.testing.assert_close(blur(floats), TF.gaussian_blur(floats, [kernel, kernel], [sigma, sigma]))


def test_blur_kernel_is_odd_and_about_ten_percent():
    assert [blur_kernel_size(s) for s in (224, 96, 32, 16)] == [23, 9, 3, 3]


def test_bad_inputs_raise_clear_errors():
    transform = TwoViewTransform(size=8)
    with pytest.raises(TypeError, match="uint8"):
        transform(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        transform(torch.zeros(4, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="PIL"):
        transform([[0]])
    with pytest.raises(ValueError, match="blur_prob"):
        TwoViewTransform(blur_prob=1.5)
    with pytest.raises(ValueError, match="num_channels"):
        TwoViewTransform(num_channels=2)
    with pytest.raises(ValueError, match="mean"):
        TwoViewTransform(num_channels=1, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    with pytest.raises(ValueError, match="scale"):
        MultiCropTransform(local_crop_scale=(0.5, 0.1))


def test_collate_stacks_view_major_and_drops_none():
    def sample(b, label):
        views = {
            "global_views": [torch.full((1, 4, 4), 10.0 * v + b) for v in range(2)],
            "local_views": [torch.full((1, 2, 2), 100.0 + 10 * v + b) for v in range(3)],
        }
        return views, label

    batch = collate_views([sample(0, 3), None, sample(1, 5), sample(2, 7), None])
    assert batch["global_views"].shape == (2, 3, 1, 4, 4)
    assert batch["local_views"].shape == (3, 3, 1, 2, 2)
    for v in range(2):
        assert batch["global_views"][v, :, 0, 0, 0].tolist() == [10.0 * v + b for b in range(3)]
    for v in range(3):
        assert batch["local_views"][v, :, 0, 0, 0].tolist() == [100.0 + 10 * v + b for b in range(3)]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [3, 5, 7]
    assert batch["num_skipped"].dtype == torch.long and batch["num_skipped"].item() == 2

    unlabeled = collate_views([sample(0, None), sample(1, None)])
    assert "labels" not in unlabeled and unlabeled["num_skipped"].item() == 0
    assert collate_views([None, None]) == {"num_skipped": torch.tensor(2)}
    with pytest.raises(ValueError, match="local_views"):
        collate_views([sample(0, 1), ({"global_views": sample(1, 1)[0]["global_views"]}, 1)])


def test_collate_of_real_transform_outputs():
    transform = MultiCropTransform(global_crop_size=16, local_crop_size=8, num_local_crops=2)
    samples = [(transform(random_image(seed=s)), s) for s in range(4)]
    batch = collate_views(samples)
    torch.testing.assert_close(batch["global_views"][1, 2], samples[2][0]["global_views"][1])
    torch.testing.assert_close(batch["local_views"][0, 3], samples[3][0]["local_views"][0])


def test_build_views_from_recipe_section():
    two = build_views(type="two_view", size=16, scale=[0.2, 1.0], blur_prob=0.5, solarize_prob=0.0)
    assert isinstance(two, TwoViewTransform) and two(random_image())["global_views"][0].shape == (3, 16, 16)
    multi = build_views(type="multi_crop", global_crop_size=16, local_crop_size=8, num_local_crops=2, num_channels=1)
    assert isinstance(multi, MultiCropTransform) and len(multi(random_image(channels=1))["local_views"]) == 2
    with pytest.raises(ValueError, match="unknown views type 'mae'.*multi_crop"):
        build_views(type="mae")
    with pytest.raises(ValueError, match=r"\['crop_size'\].*global_crop_size"):
        build_views(type="multi_crop", crop_size=3)


def test_repr_lists_the_arguments():
    assert "num_local_crops=3" in repr(MultiCropTransform(num_local_crops=3))
    assert math.isclose(TwoViewTransform(color_jitter_strength=0.5).common["color_jitter"][0], 0.2)
