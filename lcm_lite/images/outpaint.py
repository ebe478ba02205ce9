"""Outpainting as inpainting: the picture on a larger canvas, the new margins to paint.

The canvas grows by ``LEFT, TOP, RIGHT, BOTTOM`` pixels; the margins are filled by repeating the
picture's edge pixels outward (what the VAE encoder sees there: the picture's own colours, no
hard black border for the image to continue), and the mask is white on the margins, black on the
picture (or, with a mask of its own, that mask inside). At strength 1 the margins start from
noise; below 1, from the noised edge fill.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from lcm_lite.errors import UsageError


def margins_of(outpaint: Sequence[int]) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` from the request's four margins (``Request.check`` has
    checked their count and range); a UsageError when all are 0 (nothing to extend)."""
    left, top, right, bottom = (int(value) for value in outpaint)
    if not any((left, top, right, bottom)):
        raise UsageError("outpaint margins are pixels to add: not all 0, got [0, 0, 0, 0]")
    return left, top, right, bottom


def extend(picture: Image.Image, margins: tuple[int, int, int, int]) -> Image.Image:
    """``picture`` on the larger canvas, the margins filled with its edge pixels repeated."""
    left, top, right, bottom = margins
    pixels = np.pad(np.asarray(picture), ((top, bottom), (left, right), (0, 0)), mode="edge")
    return Image.fromarray(pixels)


def outpaint_mask(
    picture: Image.Image, margins: tuple[int, int, int, int], mask: Image.Image | None = None
) -> Image.Image:
    """The mask of the extended canvas: white margins; inside, black, or ``mask`` (resized to
    the picture) where one is given."""
    left, top, right, bottom = margins
    inside = (
        Image.new("L", picture.size)
        if mask is None
        else mask.convert("L").resize(picture.size, resample=Image.Resampling.LANCZOS)
    )
    canvas = Image.new("L", (picture.width + left + right, picture.height + top + bottom), 255)
    canvas.paste(inside, (left, top))
    return canvas
