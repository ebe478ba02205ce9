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

from collections.abc import Sequence

import numpy as np
from PIL import Image

from lcm_lite.errors import UsageError
from lcm_lite.images.preprocess import Picture, load_images

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
