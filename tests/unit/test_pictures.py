"""Starting pictures are read and prepared as diffusers does, and bad ones are one-line errors."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from lcm_lite.errors import UsageError
from lcm_lite.images.preprocess import (
    check_picture_count,
    load_image,
    load_images,
    output_size,
    preprocess,
    repeat_for_batch,
)

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")
from diffusers.image_processor import VaeImageProcessor  # noqa: E402
from diffusers.utils import load_image as diffusers_load_image  # noqa: E402


def _varied(width: int = 40, height: int = 24, seed: int = 0) -> np.ndarray:
    rows, columns = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(seed).integers(0, 50, (height, width, 3))
    pixels = np.stack([columns * 6, rows * 9, (rows + columns) * 3], -1) + noise
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _saved(picture: Image.Image, path, **options) -> str:
    picture.save(path, **options)
    return str(path)


def _png_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _with_header_size(png: bytes, width: int, height: int) -> bytes:
    """``png`` whose IHDR claims ``width x height`` (CRC fixed): a bomb that costs nothing."""
    header = png[16:29]
    header = struct.pack(">II", width, height) + header[8:]
    chunk = b"IHDR" + header
    return png[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + png[33:]


RGB = Image.fromarray(_varied())


def _cmyk_jpeg(path):
    return _saved(RGB.convert("CMYK"), path / "cmyk.jpg", quality=95)


def _palette_png(path):
    return _saved(RGB.quantize(64), path / "palette.png")


def _alpha_png(path):
    rgba = RGB.copy()
    rgba.putalpha(Image.fromarray(_varied()[:, :, 0]))
    return _saved(rgba, path / "alpha.png")


def _sixteen_bit_png(path):
    gray = (_varied()[:, :, 0].astype(np.uint16) * 257 // 4).astype(np.uint16)
    return _saved(Image.fromarray(gray), path / "gray16.png")


def _grayscale_webp(path):
    return _saved(RGB.convert("L"), path / "gray.webp", lossless=True)


def _rotated_jpeg(path):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return _saved(RGB, path / "rotated.jpg", exif=exif, quality=95)


@pytest.mark.parametrize(
    "make",
    [_cmyk_jpeg, _palette_png, _alpha_png, _sixteen_bit_png, _grayscale_webp, _rotated_jpeg],
    ids=["cmyk", "palette", "alpha", "16-bit", "grayscale-webp", "exif-rotated"],
)
@pytest.mark.parity
def test_every_kind_of_picture_becomes_the_rgb_picture_diffusers_load_image_makes(make, tmp_path):
    path = make(tmp_path)

    ours = load_image(path)

    assert ours.mode == "RGB"
    assert np.array_equal(np.asarray(ours), np.asarray(diffusers_load_image(path)))


def test_exif_orientation_turns_the_picture_upright(tmp_path):
    assert load_image(_rotated_jpeg(tmp_path)).size == (RGB.height, RGB.width)


def test_a_path_its_bytes_a_pil_image_and_an_array_give_the_same_picture(tmp_path):
    path = _saved(RGB, tmp_path / "p.png")
    pixels = np.asarray(RGB)
    expected = np.asarray(load_image(path))
    for source in (
        tmp_path / "p.png",
        _png_bytes(RGB),
        Image.open(path),
        pixels,
        pixels / 255.0,
        pixels.astype(np.float32) / 255,
    ):
        assert np.array_equal(np.asarray(load_image(source)), expected)
    gray = pixels[:, :, 0]
    assert np.array_equal(np.asarray(load_image(gray)), np.stack([gray] * 3, axis=-1))


@pytest.mark.parametrize(
    ("size", "width", "height"),
    [((100, 75), None, None), ((64, 64), None, None), ((90, 70), 80, 48)],
)
@pytest.mark.parity
def test_preprocess_matches_vae_image_processor(size, width, height):
    picture = Image.fromarray(_varied(*size))
    processor = VaeImageProcessor(vae_scale_factor=8)
    expected = processor.preprocess(picture, height=height, width=width).numpy()

    width, height = output_size(picture, width, height, multiple=8, max_side=2048)
    ours = preprocess([picture], width, height)

    assert ours.dtype == np.float32
    assert ours.shape == expected.shape
    np.testing.assert_array_equal(ours, expected)


def test_the_size_is_the_pictures_rounded_down_to_a_multiple_of_8():
    picture = Image.new("RGB", (100, 75))
    assert output_size(picture, None, None, 8, 2048) == (96, 72)
    assert output_size(picture, 64, None, 8, 2048) == (64, 72)


def test_a_picture_larger_than_the_output_limit_suggests_a_size_that_keeps_its_shape():
    with pytest.raises(UsageError, match=r"4032x3024 image.*\(e\.g\. 2048x1536\)"):
        output_size(Image.new("RGB", (4032, 3024)), None, None, 8, 2048)


@pytest.mark.parity
def test_pictures_are_tiled_over_the_batch_as_diffusers_duplicates_them():
    latents = np.arange(2, dtype=np.float32).reshape(2, 1)
    assert repeat_for_batch(latents, 4)[:, 0].tolist() == [0, 1, 0, 1]
    with pytest.raises(UsageError, match="2 pictures cannot be spread over 3 images"):
        check_picture_count(2, 3)
    with pytest.raises(UsageError, match="3 pictures cannot be spread over 2 images"):
        check_picture_count(3, 2)


def _truncated_png(path):
    data = _png_bytes(Image.fromarray(_varied(200, 200)))
    (path / "cut.png").write_bytes(data[: len(data) // 2])
    return path / "cut.png"


def _not_a_picture(path):
    (path / "notes.png").write_text("these are not pixels")
    return path / "notes.png"


def _bomb(path):
    data = _with_header_size(_png_bytes(RGB), 10_000, 10_000)
    (path / "bomb.png").write_bytes(data)
    return path / "bomb.png"


def _pillow_bomb(path):  # over Pillow's own limit: Pillow refuses it as it opens
    data = _with_header_size(_png_bytes(RGB), 20_000, 20_000)
    (path / "huge.png").write_bytes(data)
    return path / "huge.png"


def _one_pixel(path):
    return _saved(Image.new("RGB", (1, 1), "red"), path / "dot.png")


def _gif(path):
    return _saved(RGB, path / "anim.gif")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_not_a_picture, "notes.png is not a PNG, JPEG or WebP picture"),
        (_gif, "anim.gif is not a PNG, JPEG or WebP picture"),
        (_truncated_png, "cut.png is truncated or corrupt"),
        (_bomb, r"bomb.png \(10000x10000\) has more than the 64 megapixels"),
        (_pillow_bomb, "huge.png has more than the 64 megapixels"),
        (_one_pixel, "dot.png is 1x1: image-to-image needs at least 8x8 pixels"),
        (lambda path: path / "absent.png", "no such picture file"),
        (lambda path: b"\x89PNG\r\n", "the picture is not a PNG, JPEG or WebP picture"),
        (lambda path: np.zeros((4, 4, 2), np.uint8), "an image array must be HxW or HxWx3"),
        (lambda path: np.full((9, 9), 2.0), r"a float image array must hold values in \[0, 1\]"),
        (lambda path: np.zeros((9, 9), np.int64), "an image array must be uint8"),
        (lambda path: 42, "image must be a PIL image, a file path, bytes or an array, got int"),
    ],
)
def test_a_bad_picture_is_a_one_line_usage_error(make, message, tmp_path):
    with pytest.raises(UsageError, match=message) as error:
        load_image(make(tmp_path))
    assert "\n" not in str(error.value)


def test_a_list_or_a_batch_array_gives_one_picture_each():
    pixels = np.stack([_varied(seed=1), _varied(seed=2)])
    for source in (pixels, list(pixels), tuple(pixels)):
        pictures = load_images(source)
        assert [np.asarray(p).tolist() for p in pictures] == [p.tolist() for p in pixels]
    with pytest.raises(UsageError, match="image is an empty list"):
        load_images([])
