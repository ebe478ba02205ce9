"""VAE output to pictures, as diffusers' ``VaeImageProcessor.postprocess``."""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_pil(decoded: np.ndarray) -> list[Image.Image]:
    """VAE output (batch, 3, H, W) in [-1, 1] -> RGB images, as diffusers' VaeImageProcessor:
    ``(x / 2 + 0.5).clamp(0, 1)``, then ``(x * 255).round()`` to uint8."""
    pixels = np.clip(decoded / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)
    return [Image.fromarray(p) for p in (pixels * 255).round().astype(np.uint8)]
