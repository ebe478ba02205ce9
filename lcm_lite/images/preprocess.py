"""Pictures in: the starting images of image-to-image, prepared exactly as diffusers prepares them.

``load_image`` is diffusers' ``load_image`` (EXIF orientation applied, then PIL's
``convert("RGB")``) with the checks a service needs; ``preprocess`` is ``VaeImageProcessor.
preprocess`` for PIL images (Lanczos resize, pixels scaled to [-1, 1]). Conversions follow PIL, as
diffusers does: CMYK and palette pictures become RGB, alpha is dropped (not blended), and a 16-bit
grayscale picture clips at 255 (save it as 8-bit first).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lcm_lite.errors import UsageError

FORMATS = ("PNG", "JPEG", "WEBP")
MAX_PICTURE_PIXELS = 64 * 1024 * 1024  # 8192 x 8192: a larger picture is refused before decoding
MIN_PICTURE_SIDE = 8

Picture = Image.Image | str | Path | bytes | np.ndarray


def load_image(image: Picture) -> Image.Image:
    """An RGB picture from a PIL image, a file (PNG, JPEG or WebP), its bytes, or an array.

    As diffusers' ``load_image``: ``ImageOps.exif_transpose``, then ``convert("RGB")``. An array
    is HxW or HxWxC (C = 1, 3 or 4), uint8, or float in [0, 1] rounded to 8 bits as diffusers'
    ``numpy_to_pil`` does. Raises a one-line UsageError for what is not a picture, is truncated,
    has more than ``MAX_PICTURE_PIXELS`` pixels (checked from the header, before decoding) or a
    side under ``MIN_PICTURE_SIDE``.
    """
    if isinstance(image, Image.Image):
        return _to_rgb(image, "the picture")
    if isinstance(image, np.ndarray):
        return _to_rgb(_from_array(image), "the picture array")
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise UsageError(f"no such picture file: {path}")
        return _decode(path, path.name)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(image), "the picture")
    raise UsageError(
        f"image must be a PIL image, a file path, bytes or an array, got {type(image).__name__}"
    )


def load_images(image: Picture | Sequence[Picture]) -> list[Image.Image]:
    """``load_image`` of one picture, or of each picture of a list, a tuple or an NxHxWxC array."""
    is_batch = isinstance(image, (list, tuple)) or (
        isinstance(image, np.ndarray) and image.ndim == 4
    )
    images = list(image) if is_batch else [image]
    if not images:
        raise UsageError("image is an empty list: give a picture")
    return [load_image(item) for item in images]


def _open(source: Path | io.BytesIO, name: str) -> Image.Image:
    """Open one picture of ``FORMATS``: its header read, nothing decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit is lower
            return Image.open(source, formats=FORMATS)
    except UnidentifiedImageError:
        raise UsageError(f"{name} is not a PNG, JPEG or WebP picture") from None
    except Image.DecompressionBombError:
        raise UsageError(_too_many_pixels(name)) from None
    except OSError as error:
        raise UsageError(f"cannot read {name}: {error}") from None


def _decode(source: Path | io.BytesIO, name: str) -> Image.Image:
    """Open one picture of ``FORMATS`` and decode it, its size checked from the header first."""
    with _open(source, name) as opened:
        return _to_rgb(opened, name)


def header_sizes(image: Picture | Sequence[Picture]) -> list[tuple[int, int]]:
    """Each picture's width and height as stored (before EXIF orientation), read from the
    header of a file or bytes without decoding a pixel; a PIL image's or an array's own. Raises
    the UsageError ``load_images`` would for what is not a picture."""
    is_batch = isinstance(image, (list, tuple)) or (
        isinstance(image, np.ndarray) and image.ndim == 4
    )
    sizes = []
    for item in list(image) if is_batch else [image]:
        if isinstance(item, Image.Image):
            sizes.append(item.size)
        elif isinstance(item, np.ndarray) and item.ndim in (2, 3):
            sizes.append((item.shape[1], item.shape[0]))
        elif isinstance(item, (str, Path)) and Path(item).is_file():
            with _open(Path(item), Path(item).name) as opened:
                sizes.append(opened.size)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            with _open(io.BytesIO(item), "the picture") as opened:
                sizes.append(opened.size)
        else:
            load_image(item)  # its own error: no such file, not a picture
    return sizes


def check_headers(
    image: Picture | Sequence[Picture], max_pixels: int = MAX_PICTURE_PIXELS
) -> list[tuple[int, int]]:
    """Each picture's stored size (``header_sizes``), refused from the header alone when
    ``load_images`` would refuse it once decoded: more than ``max_pixels`` pixels, or a side under
    ``MIN_PICTURE_SIDE``."""
    sizes = header_sizes(image)
    for picture_width, picture_height in sizes:
        if picture_width * picture_height > max_pixels:
            name = f"the picture ({picture_width}x{picture_height})"
            raise UsageError(_too_many_pixels(name, max_pixels))
        if min(picture_width, picture_height) < MIN_PICTURE_SIDE:
            raise UsageError(_too_small(picture_width, picture_height))
    return sizes


def check_before_decoding(
    image: Picture | Sequence[Picture],
    width: int | None,
    height: int | None,
    multiple: int,
    max_side: int,
    *,
    max_pixels: int = MAX_PICTURE_PIXELS,
    min_side: int = MIN_PICTURE_SIDE,
) -> None:
    """Refuse from the headers alone, before a pixel is decoded, pictures that ``load_images``
    and ``output_size`` would refuse once decoded: more than ``max_pixels`` pixels, a side under
    ``MIN_PICTURE_SIDE``, or an image to make (the first picture's size where ``width`` or
    ``height`` is None) with a side over ``max_side`` or under ``min_side``. EXIF orientation,
    unknown before decoding, may turn a picture: its size is refused only if it fails both ways."""
    sizes = check_headers(image, max_pixels)
    if sizes and (width is None or height is None):
        try:
            output_size(sizes[0], width, height, multiple, max_side, min_side)
        except UsageError as refused:
            try:
                output_size(sizes[0][::-1], width, height, multiple, max_side, min_side)
            except UsageError:
                raise refused from None


def _to_rgb(picture: Image.Image, name: str) -> Image.Image:
    """diffusers' ``exif_transpose`` and ``convert("RGB")`` of a picture of a usable size."""
    width, height = picture.size
    if width * height > MAX_PICTURE_PIXELS:
        raise UsageError(_too_many_pixels(f"{name} ({width}x{height})"))
    if min(width, height) < MIN_PICTURE_SIDE:
        raise UsageError(_too_small(width, height, name))
    try:
        return ImageOps.exif_transpose(picture).convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:  # PIL's decoders raise all three
        raise UsageError(f"{name} is truncated or corrupt: {error}") from None


def _too_small(width: int, height: int, name: str = "the picture") -> str:
    return (
        f"{name} is {width}x{height}: image-to-image needs at least "
        f"{MIN_PICTURE_SIDE}x{MIN_PICTURE_SIDE} pixels"
    )


def _too_many_pixels(name: str, max_pixels: int = MAX_PICTURE_PIXELS) -> str:
    return (
        f"{name} has more than the {max_pixels / 2**20:g} megapixels lcm-lite reads "
        "(an image bomb?): scale it down first"
    )


def _from_array(array: np.ndarray) -> Image.Image:
    """HxW or HxWxC uint8, or float in [0, 1] (``(x * 255).round()`` as diffusers'
    ``numpy_to_pil``), as a PIL image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise UsageError(f"an image array must be HxW or HxWx3 (or x4), got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise UsageError("a float image array must hold values in [0, 1]")
        array = (array * 255).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        raise UsageError(f"an image array must be uint8 or float in [0, 1], got {array.dtype}")
    return Image.fromarray(array)


def output_size(
    picture: Image.Image | tuple[int, int],
    width: int | None,
    height: int | None,
    multiple: int,
    max_side: int,
    min_side: int = MIN_PICTURE_SIDE,
) -> tuple[int, int]:
    """The size to generate at: ``width``/``height`` where given, else the picture's (an image
    or its ``(width, height)``), rounded down to a multiple of ``multiple`` (diffusers'
    ``get_default_height_width``); a UsageError for a side over ``max_side`` or under
    ``min_side``."""
    picture_width, picture_height = picture if isinstance(picture, tuple) else picture.size
    if width is None:
        width = picture_width - picture_width % multiple
    if height is None:
        height = picture_height - picture_height % multiple
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        fits = [max(multiple, int(side * scale) // multiple * multiple) for side in (width, height)]
        raise UsageError(
            f"the picture makes a {width}x{height} image, larger than {max_side} pixels a side: "
            f"give a smaller width and height (e.g. {fits[0]}x{fits[1]})"
        )
    if min(width, height) < min_side:
        fits = [max(min_side, side) for side in (width, height)]
        raise UsageError(
            f"the picture makes a {width}x{height} image, smaller than {min_side} pixels a side: "
            f"give a larger picture, or the width and height to make (e.g. {fits[0]}x{fits[1]})"
        )
    return width, height


def preprocess(
    pictures: list[Image.Image], width: int, height: int, *, normalize: bool = True
) -> np.ndarray:
    """diffusers' ``VaeImageProcessor.preprocess`` of RGB pictures: each resized to
    ``width x height`` with Lanczos, then ``x / 255`` and (``normalize``, as the VAE's processor;
    a ControlNet's control pictures are not) ``2 x - 1``: float32 (n, 3, H, W)."""
    resized = [
        picture.resize((width, height), resample=Image.Resampling.LANCZOS) for picture in pictures
    ]
    pixels = np.stack([np.array(picture).astype(np.float32) / 255.0 for picture in resized])
    if normalize:
        pixels = 2.0 * pixels - 1.0
    return pixels.transpose(0, 3, 1, 2).copy()


def check_picture_count(count: int, batch_size: int) -> None:
    """diffusers' rule: ``count`` pictures must divide the batch (prompts x num_images)."""
    if count > batch_size or batch_size % count:
        raise UsageError(
            f"{count} pictures cannot be spread over {batch_size} images: give one picture, or "
            "as many as the prompts (or a number that divides prompts x num_images)"
        )


def repeat_for_batch(latents: np.ndarray, batch_size: int) -> np.ndarray:
    """diffusers' duplication rule (img2img ``prepare_latents``): the pictures' latents are
    tiled, so batch entry ``i`` starts from picture ``i % n``; with several prompts and
    ``num_images > 1`` that pairs a prompt's images with different pictures, as in diffusers."""
    check_picture_count(latents.shape[0], batch_size)
    return np.concatenate([latents] * (batch_size // latents.shape[0]))
