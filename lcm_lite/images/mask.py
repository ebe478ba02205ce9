"""Inpainting masks in pixels, prepared exactly as diffusers' ``StableDiffusionInpaintPipeline``
prepares them (its ``mask_processor``, a ``VaeImageProcessor`` with ``do_normalize=False,
do_binarize=True, do_convert_grayscale=True``).

White (at least 50 % gray) is the area to repaint, black the area to keep. A mask is read as a
picture (``preprocess.load_image``: EXIF orientation, then RGB, alpha dropped), resized with
Lanczos to the image's width x height, converted to grayscale (PIL's ``convert("L")``) and
binarized at 0.5. The masked picture the 9-channel UNet sees is the picture with the area to
repaint set to 0 (mid-gray in [-1, 1]); the latent mask is the pixel mask sampled at every
``scale``-th pixel (``torch.nn.functional.interpolate``'s default "nearest").
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from lcm_lite.errors import UsageError
from lcm_lite.images.preprocess import MAX_PICTURE_PIXELS, Picture, check_headers, load_images

BINARIZE_AT = 0.5
ASPECT_TOLERANCE = 0.01  # the mask's shape may differ from the picture's by 1 % (rounding)


def load_masks(mask: Picture | Sequence[Picture], picture_count: int) -> list[Image.Image]:
    """One mask for every picture, or one per picture, read as pictures (a UsageError for what
    is not one, or for a count that is neither)."""
    masks = load_images(mask)
    if len(masks) not in (1, picture_count):
        raise UsageError(
            f"{len(masks)} masks for {picture_count} pictures: give one mask, or one per picture"
        )
    return masks


def check_aspect_ratio(mask: Image.Image, picture: Image.Image) -> None:
    """A UsageError when ``mask`` has another aspect ratio than ``picture`` (both are resized to
    the image's size: a mask of another shape would be stretched over the wrong area)."""
    mask_ratio = mask.width / mask.height
    picture_ratio = picture.width / picture.height
    if abs(mask_ratio / picture_ratio - 1) > ASPECT_TOLERANCE:
        raise UsageError(
            f"the mask is {mask.width}x{mask.height} and the picture {picture.width}x"
            f"{picture.height}: give a mask of the picture's shape (white: repaint, black: keep)"
        )


def mask_pixels(masks: list[Image.Image], width: int, height: int) -> np.ndarray:
    """``mask_processor.preprocess(masks, height, width)``: each resized to ``width x height``
    (Lanczos), to grayscale, ``/ 255``, then 0 below 0.5 and 1 from 0.5: float32 (n, 1, H, W).
    A UsageError for a mask with nothing to repaint."""
    resized = [
        mask.resize((width, height), resample=Image.Resampling.LANCZOS).convert("L")
        for mask in masks
    ]
    pixels = np.stack([np.asarray(mask, dtype=np.float32) / 255.0 for mask in resized])
    binary = (pixels >= BINARIZE_AT).astype(np.float32)[:, None]
    if not binary.reshape(len(masks), -1).any(axis=1).all():
        raise UsageError(
            "the mask is empty: nothing to repaint (white, at least 50% gray, is the area to "
            "repaint; black is kept)"
        )
    return binary


def masked_pictures(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """diffusers' ``init_image * (mask_condition < 0.5)``: the pictures (n, 3, H, W) in [-1, 1]
    with the area to repaint set to 0, broadcast over one mask or one per picture."""
    return pixels * (mask < BINARIZE_AT)


def latent_mask(mask: np.ndarray, scale: int) -> np.ndarray:
    """The mask at the latents' size (``H / scale``): torch's "nearest" interpolation by an
    integer factor takes every ``scale``-th pixel, from the first."""
    return np.ascontiguousarray(mask[:, :, ::scale, ::scale])


def blur(mask: Image.Image, radius: float) -> Image.Image:
    """diffusers' ``VaeImageProcessor.blur(mask, blur_factor=radius)``: PIL's Gaussian blur, on
    the mask as given (before it is resized and binarized: it rounds the mask's shape)."""
    return mask.filter(ImageFilter.GaussianBlur(radius))


def crop_region(mask: Image.Image, width: int, height: int, pad: int) -> tuple[int, int, int, int]:
    """diffusers' ``get_crop_region``: the box (left, top, right, bottom) around every pixel of
    ``mask`` that is not black, grown by ``pad`` on each side (within the mask), then grown on
    its short side, about its centre, to the ``width / height`` aspect ratio of the image to
    make (shifted back inside the mask where it would leave it)."""
    painted = np.asarray(mask.convert("L")) != 0
    mask_height, mask_width = painted.shape
    columns = np.flatnonzero(painted.any(axis=0))
    rows = np.flatnonzero(painted.any(axis=1))
    left = max(int(columns[0]) - pad, 0)
    top = max(int(rows[0]) - pad, 0)
    right = min(int(columns[-1]) + 1 + pad, mask_width)
    bottom = min(int(rows[-1]) + 1 + pad, mask_height)
    target_ratio = width / height
    if (right - left) / (bottom - top) > target_ratio:
        top, bottom = _grow(top, bottom, (right - left) / target_ratio, mask_height)
    else:
        left, right = _grow(left, right, (bottom - top) * target_ratio, mask_width)
    return left, top, right, bottom


def _grow(start: int, end: int, desired: float, limit: int) -> tuple[int, int]:
    """One side of ``crop_region``: ``[start, end)`` grown to ``desired`` (truncated), half
    before, half after, shifted to end at ``limit`` and start at 0, cut at ``limit``."""
    growth = int(desired - (end - start))
    start -= growth // 2
    end += growth - growth // 2
    if end >= limit:
        start, end = start - (end - limit), limit
    if start < 0:
        start, end = 0, end - start
    return start, min(end, limit)


def resize_and_fill(picture: Image.Image, width: int, height: int) -> Image.Image:
    """diffusers' ``resize_mode="fill"``: resized (Lanczos) to fit ``width x height`` with its
    aspect ratio kept, centred on an RGB canvas, the bands left filled by stretching its first
    and last rows (or columns)."""
    ratio, picture_ratio = width / height, picture.width / picture.height
    fit_width = width if ratio < picture_ratio else picture.width * height // picture.height
    fit_height = height if ratio >= picture_ratio else picture.height * width // picture.width
    fitted = picture.resize((fit_width, fit_height), resample=Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (width, height))
    canvas.paste(fitted, box=(width // 2 - fit_width // 2, height // 2 - fit_height // 2))
    if ratio < picture_ratio and (band := height // 2 - fit_height // 2) > 0:
        canvas.paste(fitted.resize((width, band), box=(0, 0, width, 0)), box=(0, 0))
        edge = (0, fitted.height, width, fitted.height)
        canvas.paste(fitted.resize((width, band), box=edge), box=(0, band + fit_height))
    elif ratio > picture_ratio and (band := width // 2 - fit_width // 2) > 0:
        canvas.paste(fitted.resize((band, height), box=(0, 0, 0, height)), box=(0, 0))
        edge = (fitted.width, 0, fitted.width, height)
        canvas.paste(fitted.resize((band, height), box=edge), box=(band + fit_width, 0))
    return canvas


def _resize_and_crop(picture: Image.Image, width: int, height: int) -> Image.Image:
    """diffusers' ``resize_mode="crop"``: resized (Lanczos) to cover ``width x height`` with its
    aspect ratio kept, centred, the excess cut."""
    ratio, picture_ratio = width / height, picture.width / picture.height
    cover_width = width if ratio > picture_ratio else picture.width * height // picture.height
    cover_height = height if ratio <= picture_ratio else picture.height * width // picture.width
    covering = picture.resize((cover_width, cover_height), resample=Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (width, height))
    canvas.paste(covering, box=(width // 2 - cover_width // 2, height // 2 - cover_height // 2))
    return canvas


def paste_back(
    generated: Image.Image,
    picture: Image.Image,
    mask: Image.Image,
    region: tuple[int, int, int, int],
) -> Image.Image:
    """diffusers' ``apply_overlay``: the image made for ``region`` resized into it, on a black
    canvas of the picture's size, under the picture itself where ``mask`` is black (its gray
    levels are the picture's opacity, composited premultiplied as PIL's "RGBa")."""
    kept = Image.new("RGBa", picture.size)
    kept.paste(picture.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    left, top, right, bottom = region
    canvas = Image.new("RGBA", picture.size)
    canvas.paste(_resize_and_crop(generated, right - left, bottom - top), (left, top))
    result = canvas.convert("RGB").convert("RGBA")
    result.alpha_composite(kept.convert("RGBA"))
    return result.convert("RGB")


@dataclass(frozen=True)
class MaskCrop:
    """diffusers' ``padding_mask_crop``: the image is made for ``region`` of the picture (the box
    around the mask, see ``crop_region``) at the image's size, then pasted back into the picture,
    which keeps its own size (``paste_back``)."""

    picture: Image.Image
    mask: Image.Image
    region: tuple[int, int, int, int]

    @classmethod
    def of(
        cls,
        pictures: list[Image.Image],
        masks: list[Image.Image],
        width: int,
        height: int,
        pad: int,
    ) -> MaskCrop:
        """The crop of one picture and its mask, of the same size (UsageErrors otherwise)."""
        if len(pictures) != 1 or len(masks) != 1:
            raise UsageError("padding_mask_crop takes one picture and one mask")
        picture, mask = pictures[0], masks[0]
        if picture.size != mask.size:
            raise UsageError(
                f"with padding_mask_crop the mask must have the picture's size, "
                f"{picture.width}x{picture.height}; it is {mask.width}x{mask.height}"
            )
        return cls(picture, mask, crop_region(mask, width, height, pad))

    def cropped(self, width: int, height: int) -> tuple[Image.Image, Image.Image]:
        """The picture and the mask cut to ``region`` and fitted to ``width x height`` (diffusers'
        ``crops_coords`` with ``resize_mode="fill"``)."""
        return self.fit(self.picture, width, height), self.fit(self.mask, width, height)

    def fit(self, picture: Image.Image, width: int, height: int) -> Image.Image:
        """``picture`` (the picture, its mask, a control picture) cut to ``region`` and fitted
        to ``width x height``."""
        return resize_and_fill(picture.crop(self.region), width, height)

    def paste_back(self, images: list[Image.Image]) -> list[Image.Image]:
        return [paste_back(image, self.picture, self.mask, self.region) for image in images]


def openai_mask(data: bytes, max_pixels: int = MAX_PICTURE_PIXELS) -> bytes:
    """A mask uploaded to the OpenAI images API, as white-is-repaint: one with an alpha channel
    follows OpenAI (its fully transparent pixels are the area to edit), returned as a PNG of
    white there on black; one without alpha is returned as it is (white is the area to edit, as
    OpenVINO Model Server, GenAI and diffusers). Checked from its header before it is decoded."""
    check_headers(data, max_pixels)
    with Image.open(io.BytesIO(data)) as opened:
        has_alpha = opened.mode in ("RGBA", "LA", "PA", "RGBa", "La")
        if not has_alpha and "transparency" not in opened.info:
            return data
        alpha = ImageOps.exif_transpose(opened).convert("RGBA").getchannel("A")
    repaint = alpha.point(lambda value: 255 if value == 0 else 0)
    out = io.BytesIO()
    repaint.save(out, format="PNG")
    return out.getvalue()
