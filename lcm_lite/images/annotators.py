"""Control pictures from photos, without a model or torch: what a ControlNet was trained on.

``canny``: the edge map a Canny ControlNet (lllyasviel/control_v11p_sd15_canny) takes, white edges
on black, as the ControlNet examples make it with OpenCV (``cv2.Canny(image, 100, 200)``): the
thresholds apply to OpenCV's gradient, ``|Gx| + |Gy|`` of 3x3 Sobel filters on 0..255 values.
As ``cv2.Canny`` on an RGB picture, each pixel takes the gradient of its strongest channel. Unlike
it, the picture is first smoothed by a Gaussian (``BLUR_RADIUS``), the textbook Canny step, so
noise and JPEG artefacts make fewer stray edges. ``gray`` and ``invert``: the picture in
gray levels, or inverted (a black-on-white sketch for ControlNets trained on white lines).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from lcm_lite.errors import UsageError

ANNOTATORS = ("canny", "gray", "invert")
BLUR_RADIUS = 1.0  # the Gaussian's standard deviation, in pixels
DEFAULT_THRESHOLDS = (100.0, 200.0)  # OpenCV's usual threshold1, threshold2


def annotate(
    picture: Image.Image, kind: str, thresholds: Sequence[float] | None = None
) -> Image.Image:
    """``picture`` (RGB) turned into the control picture ``kind`` names (``ANNOTATORS``), RGB;
    ``thresholds``: Canny's (low, high), default ``DEFAULT_THRESHOLDS``."""
    if kind == "canny":
        low, high = _two_thresholds(thresholds or DEFAULT_THRESHOLDS)
        return canny(picture, low, high)
    if kind == "gray":
        return ImageOps.grayscale(picture).convert("RGB")
    if kind == "invert":
        return ImageOps.invert(picture.convert("RGB"))
    raise UsageError(f"no control preprocessor {kind!r}; choose {', '.join(ANNOTATORS)}")


def _two_thresholds(thresholds: Sequence[float]) -> tuple[float, float]:
    values = list(thresholds) if isinstance(thresholds, (list, tuple)) else [thresholds]
    if len(values) != 2:
        raise UsageError(f"give two Canny thresholds, low,high (e.g. 100,200), got {values}")
    return float(values[0]), float(values[1])


def canny(picture: Image.Image, low: float = 100.0, high: float = 200.0) -> Image.Image:
    """Canny's edges: Gaussian blur, Sobel gradients (of the strongest channel), non-maximum
    suppression along the gradient
    (quantised to 4 directions), then hysteresis: pixels above ``high`` are edges, and pixels
    above ``low`` connected (8-neighbours) to them. White (255) on black, RGB."""
    if not 0 <= low <= high:
        raise UsageError(f"Canny thresholds must satisfy 0 <= low <= high, got {low}, {high}")
    blurred = picture.convert("RGB").filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
    pixels = np.pad(np.asarray(blurred, dtype=np.float32), ((1, 1), (1, 1), (0, 0)), mode="edge")
    gx, gy = _sobel(pixels)
    magnitudes = np.abs(gx) + np.abs(gy)
    strongest = np.argmax(magnitudes, axis=2)[..., None]  # the channel OpenCV would take
    gx, gy, magnitude = (np.take_along_axis(a, strongest, 2)[..., 0] for a in (gx, gy, magnitudes))
    thin = _non_maximum_suppression(magnitude, gx, gy)
    edges = _hysteresis(thin > high, thin > low)
    return Image.fromarray(np.where(edges, 255, 0).astype(np.uint8)).convert("RGB")


def _sobel(padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 Sobel derivatives of the inner pixels of an edge-padded array (each channel)."""

    def at(dy: int, dx: int) -> np.ndarray:
        height, width = padded.shape[0] - 2, padded.shape[1] - 2
        return padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    return gx, gy


def _non_maximum_suppression(magnitude: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """``magnitude`` where it is a maximum across the edge (along the gradient, quantised to 0,
    45, 90 or 135 degrees: ``>`` the neighbour before, ``>=`` the one after), else 0."""
    angle = np.rad2deg(np.arctan2(gy, gx)) % 180
    direction = (np.round(angle / 45).astype(int)) % 4  # 0: horizontal gradient, 2: vertical
    padded = np.pad(magnitude, 1)
    height, width = magnitude.shape
    keep = np.zeros_like(magnitude, dtype=bool)
    for index, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        before = padded[1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]
        after = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        keep |= (direction == index) & (magnitude > before) & (magnitude >= after)
    return np.where(keep, magnitude, 0)


def _hysteresis(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """The ``weak`` pixels 8-connected to a ``strong`` one (strong ones included), grown one
    ring at a time until nothing changes."""
    edges = strong & weak
    while True:
        padded = np.pad(edges, 1)
        height, width = edges.shape
        grown = edges.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                grown |= padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        grown &= weak
        if np.array_equal(grown, edges):
            return edges
        edges = grown
