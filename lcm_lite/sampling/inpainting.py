"""The latent side of inpainting, as diffusers' ``StableDiffusionInpaintPipeline`` runs it.

Its schedule is the full schedule cut by ``strength`` (``get_timesteps``: the last
``int(steps * strength)`` timesteps run). A 4-channel UNet (an LCM's own) repaints the whole
image; after each step the area to keep is put back: the pictures' latents noised with the
starting noise to the NEXT timestep (un-noised after the last step), blended with the mask
(``(1 - mask) * picture + mask * latents``). A 9-channel inpainting UNet takes the latents, the
mask and the masked pictures' latents concatenated on the channels, and nothing is blended.
"""

from __future__ import annotations

import numpy as np

from lcm_lite.errors import UsageError
from lcm_lite.sampling.scheduler import LCMScheduler

UNET_CHANNELS = (4, 9)  # an LCM's (or SD's) own UNet, an inpainting UNet


def cut_by_strength(timesteps: np.ndarray, strength: float) -> np.ndarray:
    """diffusers' ``get_timesteps``: the last ``min(int(n * strength), n)`` of the ``n``
    timesteps; a UsageError when that is none."""
    count = len(timesteps)
    kept = min(int(count * strength), count)
    if kept < 1:
        raise UsageError(
            f"inpainting runs int(steps x strength) steps: {count} x {strength:g} is none; give "
            f"more steps or a strength of at least {1 / count:g}"
        )
    return timesteps[count - kept :]


def keep_outside_mask(
    scheduler: LCMScheduler,
    latents: np.ndarray,
    denoised: np.ndarray,
    picture_latents: np.ndarray,
    noise: np.ndarray,
    mask: np.ndarray,
    next_timestep: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """After a step, the 4-channel blend: ``latents`` outside ``mask`` replaced by the pictures'
    latents noised to ``next_timestep`` (``init_latents_proper``; un-noised at the last step,
    ``next_timestep`` None), and ``denoised`` by the pictures' latents themselves (what a
    preview, and at the last step the image, shows)."""
    keep = np.float32(1.0) - mask
    noised = (
        picture_latents
        if next_timestep is None
        else scheduler.add_noise(picture_latents, noise, next_timestep)
    )
    return keep * noised + mask * latents, keep * picture_latents + mask * denoised


def inpainting_unet_input(
    latents: np.ndarray, mask: np.ndarray, masked_picture_latents: np.ndarray
) -> np.ndarray:
    """A 9-channel UNet's input: ``cat([latents, mask, masked_image_latents], dim=1)``."""
    return np.concatenate([latents, mask, masked_picture_latents], axis=1)
