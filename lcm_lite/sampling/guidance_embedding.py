"""The guidance-scale embedding the LCM UNet takes as ``timestep_cond``.

LCM distils classifier-free guidance into the UNet: instead of two UNet passes, the guidance scale
is fed in as a sinusoidal embedding (LCM paper, Luo et al. 2023, sec. 4.2; the embedding of
VDM, Kingma et al. 2021). This module reproduces diffusers' ``LatentConsistencyModelPipeline``.
"""

from __future__ import annotations

import numpy as np

from lcm_lite.errors import UsageError

_MAX_PERIOD = np.float32(10000.0)
_W_SCALE = np.float32(1000.0)


def guidance_scale_embedding(
    guidance_scale: float, batch_size: int, embedding_dim: int
) -> np.ndarray:
    """Return the float32 ``(batch_size, embedding_dim)`` guidance embedding for ``guidance_scale``.

    As diffusers: ``w = guidance_scale - 1`` (diffusers uses the Stable Diffusion convention where
    1 means no guidance; the original LCM code takes the paper's scale, which is diffusers' minus
    one, and embeds it unchanged), then ``get_guidance_scale_embedding``: with
    ``half = embedding_dim // 2`` and ``freq_i = exp(-i * log(10000) / (half - 1))``, the row is
    ``[sin(1000 w freq), cos(1000 w freq)]``, zero-padded when ``embedding_dim`` is odd. Computed
    in float32 in torch's order of operations, except that ``exp`` is correctly rounded: torch's
    vectorised float32 ``exp`` is within one ulp, so a frequency may differ from torch's by one ulp
    and an angle of up to ``1000 w`` radians by one float32 ulp of itself (1e-3 at w = 13).
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    if embedding_dim < 4:
        raise UsageError(f"embedding_dim must be at least 4, got {embedding_dim}")
    half_dim = embedding_dim // 2
    w = np.float32(guidance_scale - 1) * _W_SCALE
    log_step = np.log(_MAX_PERIOD) / np.float32(half_dim - 1)
    exponents = np.arange(half_dim, dtype=np.float32) * -log_step
    frequencies = np.exp(exponents.astype(np.float64)).astype(np.float32)
    angles = w * frequencies
    row = np.concatenate([np.sin(angles), np.cos(angles), np.zeros(embedding_dim % 2, np.float32)])
    return np.tile(row, (batch_size, 1))
