"""Inference image processors (both backends) and robust image loading."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms.v2 import functional as tvF
from transformers import AutoImageProcessor

import hf_ssl
from hf_ssl import DinoConfig, DinoModel, SSLImageProcessor, SSLImageProcessorPil, SSLViTConfig, processor_for
from hf_ssl.data import load_image
from hf_ssl.processing.image_processing import GRAYSCALE_MEAN, GRAYSCALE_STD

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
# One uint8 level after normalisation by the smallest std.
ONE_LEVEL = 1 / 255 / 0.224


def random_image(height, width, mode="RGB", seed=0):
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), mode=mode)


def tiny_processor(cls=SSLImageProcessor, **kwargs):
    return cls(size={"shortest_edge": 37}, crop_size={"height": 32, "width": 32}, **kwargs)


def tiny_vit(**kwargs):
    return SSLViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, **kwargs
    )


# ----------------------------------------------------------------------------------------------- processors


def test_torchvision_backend_matches_hand_computed_reference():
    # 45x48 resizes to 37x39: the crop's left offset is 3.5, rounded to 4 as torchvision's CenterCrop does.
    image = random_image(45, 48)
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    resized = tvF.resize(pixels, 37, interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
    assert resized.shape[-2:] == (37, 39)
    expected = (tvF.center_crop(resized, [32, 32]).float() / 255 - MEAN) / STD

    output = tiny_processor()(image, return_tensors="pt").pixel_values
    assert output.shape == (1, 3, 32, 32)
    torch.testing.assert_close(output[0], expected, atol=1e-5, rtol=0)


def test_pil_backend_is_the_classic_eval_transform():
    image = random_image(45, 48, seed=1)
    classic = transforms.Compose([
        transforms.Resize(37, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(32),
        transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    output = tiny_processor(SSLImageProcessorPil)(image, return_tensors="pt").pixel_values
    torch.testing.assert_close(output[0], classic(image), atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [(45, 48), (80, 61), (20, 27), (37, 37)])
def test_backends_agree(size):
    image = random_image(*size, seed=sum(size))
    fast = tiny_processor()(image, return_tensors="pt").pixel_values
    pil = tiny_processor(SSLImageProcessorPil)(image, return_tensors="pt").pixel_values
    assert fast.shape == pil.shape == (1, 3, 32, 32)
    difference = (fast - pil).abs()
    # Resampling rounding only: at most 2 uint8 levels anywhere, almost every value identical.
    assert difference.max() <= 2 * ONE_LEVEL + 1e-5
    assert difference.mean() < 0.05 * ONE_LEVEL


def test_defaults_are_the_imagenet_eval_transform():
    processor = SSLImageProcessor()
    assert processor.size.shortest_edge == 256
    assert (processor.crop_size.height, processor.crop_size.width) == (224, 224)
    assert processor.resample == Image.Resampling.BICUBIC
    assert processor.rescale_factor == pytest.approx(1 / 255)
    assert tuple(processor.image_mean) == (0.485, 0.456, 0.406)
    assert tuple(processor.image_std) == (0.229, 0.224, 0.225)
    assert processor.do_convert_rgb and not processor.do_convert_grayscale
    assert processor(random_image(300, 400), return_tensors="pt").pixel_values.shape == (1, 3, 224, 224)


def test_processor_for_reads_the_backbone():
    processor = processor_for(DinoConfig(backbone_config=tiny_vit().to_dict()))
    assert isinstance(processor, SSLImageProcessor)
    assert processor.size.shortest_edge == 37
    assert (processor.crop_size.height, processor.crop_size.width) == (32, 32)
    assert processor_for(SSLViTConfig()).size.shortest_edge == 256
    assert isinstance(processor_for(tiny_vit(), backend="pil"), SSLImageProcessorPil)
    with pytest.raises(ValueError, match="backend"):
        processor_for(tiny_vit(), backend="cv2")


@pytest.mark.parametrize("backend", ["torchvision", "pil"])
def test_grayscale_processor_for_one_channel_models(backend):
    config = SSLViTConfig(image_size=28, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=1,
                          num_attention_heads=2)
    processor = processor_for(config, backend=backend)
    assert processor.size.shortest_edge == 32 and processor.do_convert_grayscale
    gray = random_image(32, 32, mode="L")
    output = processor([gray, gray.convert("RGB")], return_tensors="pt").pixel_values
    assert output.shape == (2, 1, 28, 28)
    center = torch.from_numpy(np.asarray(gray)[2:30, 2:30].copy()).float() / 255
    expected = (center - GRAYSCALE_MEAN[0]) / GRAYSCALE_STD[0]
    torch.testing.assert_close(output[0, 0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(output[1], output[0], atol=1e-5, rtol=0)
    # A channels-first RGB tensor goes through the float luma: within one level of PIL's fixed-point luma.
    color = random_image(32, 32, seed=3)
    from_tensor = processor(torch.from_numpy(np.asarray(color).copy()).permute(2, 0, 1), return_tensors="pt")
    from_pil = processor(color, return_tensors="pt")
    assert (from_tensor.pixel_values - from_pil.pixel_values).abs().max() <= 1 / 255 / GRAYSCALE_STD[0] + 1e-5


def test_grayscale_with_three_channel_statistics_is_refused():
    with pytest.raises(ValueError, match="image_mean has 3 values"):
        tiny_processor(do_convert_grayscale=True)(random_image(40, 40), return_tensors="pt")


@pytest.mark.parametrize("cls", [SSLImageProcessor, SSLImageProcessorPil])
def test_processor_decodes_pil_modes_like_load_image(cls):
    sixteen_bit = Image.fromarray((np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40))
    cmyk = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 4), dtype=np.uint8), mode="CMYK")
    processor = tiny_processor(cls)
    for image in (sixteen_bit, cmyk):
        direct = processor(image, return_tensors="pt").pixel_values
        decoded = processor(load_image(image), return_tensors="pt").pixel_values
        torch.testing.assert_close(direct, decoded, atol=0, rtol=0)
    # Without the 16-bit scaling PIL would clip everything above 255 to white.
    assert processor(sixteen_bit, return_tensors="pt").pixel_values.std() > 0.5


def test_processor_accepts_paths(tmp_path):
    image = random_image(40, 44)
    image.save(tmp_path / "x.png")
    processor = tiny_processor()
    torch.testing.assert_close(processor(str(tmp_path / "x.png"), return_tensors="pt").pixel_values,
                               processor(image, return_tensors="pt").pixel_values)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.png"):
        processor(str(tmp_path / "bad.png"))


def test_save_and_auto_load_round_trip(tmp_path):
    config = DinoConfig(backbone_config=tiny_vit().to_dict())
    DinoModel(config).save_pretrained(tmp_path)
    saved = processor_for(config)
    saved.save_pretrained(tmp_path)
    image = random_image(50, 41)
    expected = saved(image, return_tensors="pt").pixel_values

    for backend, cls in ((None, SSLImageProcessor), ("torchvision", SSLImageProcessor), ("pil", SSLImageProcessorPil)):
        kwargs = {} if backend is None else {"backend": backend}
        loaded = AutoImageProcessor.from_pretrained(tmp_path, **kwargs)
        assert type(loaded) is cls
        assert loaded.size.shortest_edge == 37 and loaded.crop_size.height == 32
        output = loaded(image, return_tensors="pt").pixel_values
        assert (output - expected).abs().max() <= 2 * ONE_LEVEL + 1e-5
    assert hf_ssl.SSLImageProcessorPil().to_dict()["image_processor_type"] == "SSLImageProcessor"


# ------------------------------------------------------------------------------------------------ load_image


def pixels(image):
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    expected = np.array([0, 1, 128, 255])
    assert (pixels(load_image(tmp_path / "deep.png"))[0] == expected[:, None]).all()
    big_endian = Image.frombytes("I;16B", (4, 1), values.astype(">u2").tobytes())
    assert (pixels(load_image(big_endian))[0, :, 0] == expected).all()
    thirty_two_bit = Image.fromarray(values.astype(np.int32))
    assert thirty_two_bit.mode == "I"
    assert (pixels(load_image(thirty_two_bit))[0, :, 0] == expected).all()


def test_transparent_modes_are_composited_on_white(tmp_path):
    assert (pixels(load_image(Image.new("LA", (1, 1), (100, 0)))) == 255).all()
    assert (pixels(load_image(Image.new("LA", (1, 1), (100, 255)))) == 100).all()
    # 200 * 128/255 + 255 * 127/255 = 227.4 etc.
    assert pixels(load_image(Image.new("RGBA", (1, 1), (200, 100, 0, 128))))[0, 0].tolist() == [227, 177, 127]
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png", transparency=1)
    assert pixels(load_image(tmp_path / "p.png"))[0].tolist() == [[255, 0, 0], [255, 255, 255]]


def test_other_modes(tmp_path):
    gray = Image.fromarray(np.array([[0, 90, 255]], dtype=np.uint8))
    assert (pixels(load_image(gray))[0] == np.array([0, 90, 255])[:, None]).all()
    cmyk = Image.new("CMYK", (1, 1), (255, 0, 0, 0))  # pure cyan
    cmyk.save(tmp_path / "c.tif")
    assert pixels(load_image(tmp_path / "c.tif"))[0, 0].tolist() == [0, 255, 255]
    assert pixels(load_image(Image.new("CMYK", (1, 1), (0, 0, 0, 255))))[0, 0].tolist() == [0, 0, 0]
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    bilevel.save(tmp_path / "b.png")
    assert pixels(load_image(tmp_path / "b.png"))[0].tolist() == [[0, 0, 0], [255, 255, 255]]
    palette = Image.new("P", (1, 1))
    palette.putpalette([10, 20, 30] + [0] * 765)
    assert pixels(load_image(palette))[0, 0].tolist() == [10, 20, 30]


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (2, 2), (255, 0, 0)), Image.new("RGB", (2, 2), (0, 255, 0))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert Image.open(tmp_path / "a.gif").n_frames == 2
    assert pixels(load_image(tmp_path / "a.gif"))[0, 0].tolist() == [255, 0, 0]


def test_exif_orientation_is_applied(tmp_path):
    values = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    image = Image.fromarray(values).convert("RGB")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "o.png", exif=exif.tobytes())
    assert (pixels(load_image(tmp_path / "o.png"))[..., 0] == np.rot90(values, k=-1)).all()


def broken_files(directory):
    full = random_image(64, 64)
    full.save(directory / "full.png")
    full.save(directory / "full.jpg")
    png, jpg = (directory / "full.png").read_bytes(), (directory / "full.jpg").read_bytes()
    (directory / "truncated.png").write_bytes(png[: len(png) // 2])
    (directory / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (directory / "corrupt.png").write_bytes(png[:40] + bytes(200) + png[240:])
    (directory / "empty.png").write_bytes(b"")
    (directory / "notes.png").write_text("not an image")
    return ["truncated.png", "truncated.jpg", "corrupt.png", "empty.png", "notes.png", "missing.png"]


def test_bad_files_raise_value_error_naming_the_file(tmp_path):
    for name in broken_files(tmp_path):
        with pytest.raises(ValueError, match=name):
            load_image(tmp_path / name)


def test_decompression_bomb_limit_is_enforced(tmp_path, monkeypatch):
    random_image(64, 64).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 4096 pixels: PIL only warns below twice the limit
    with pytest.raises(ValueError, match="big.png.*decompression bomb"):
        load_image(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL raises above twice the limit
    with pytest.raises(ValueError, match="big.png.*decompression bomb"):
        load_image(tmp_path / "big.png")


def test_zero_size_and_wrong_type():
    with pytest.raises(ValueError, match="zero size"):
        load_image(Image.new("RGB", (0, 4)))
    with pytest.raises(TypeError, match="ndarray"):
        load_image(np.zeros((4, 4, 3), dtype=np.uint8))
