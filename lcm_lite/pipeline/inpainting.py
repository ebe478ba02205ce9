"""Inpainting's starting latents and what each step needs, prepared as diffusers'
``StableDiffusionInpaintPipeline`` prepares them (``prepare_latents``, ``prepare_mask_latents``),
with the same draws from the generator in the same order, so that every later step's noise
matches too:

1. the pictures encoded (a posterior draw for an AutoencoderKL), when the UNet has 4 channels
   (their latents are blended back after each step) or ``strength`` is below 1;
2. the starting noise (unless ``latents`` are given: they are the noise), which is the start at
   strength 1, else the pictures' latents noised to the first timestep;
3. the masked pictures encoded (a second posterior draw). A 4-channel UNet never looks at these
   latents: the draw is made, the encoder not run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lcm_lite.errors import ModelError
from lcm_lite.images.mask import latent_mask, masked_pictures
from lcm_lite.images.preprocess import repeat_for_batch
from lcm_lite.sampling.inpainting import (
    UNET_CHANNELS,
    inpainting_unet_input,
    keep_outside_mask,
)
from lcm_lite.sampling.scheduler import LCMScheduler
from lcm_lite.sampling.torch_rng import TorchGenerator

Encode = Callable[[str, np.ndarray], np.ndarray]  # (timing name, pixels) -> scaled latents


@dataclass(frozen=True)
class Inpainting:
    """What the loop needs to inpaint a batch: the latent ``mask`` (batch, 1, h, w) and either the
    pictures' latents with the starting ``noise`` (a 4-channel UNet: blended back after each
    step) or the masked pictures' latents (a 9-channel UNet: part of its input)."""

    scheduler: LCMScheduler
    mask: np.ndarray
    noise: np.ndarray
    picture_latents: np.ndarray | None = None
    masked_picture_latents: np.ndarray | None = None

    def unet_input(self, latents: np.ndarray) -> np.ndarray:
        """The UNet's sample: the latents (doubled under classifier-free guidance), with a
        9-channel UNet's mask and masked pictures (doubled too, as diffusers')."""
        if self.masked_picture_latents is None:
            return latents
        copies = len(latents) // len(self.mask)
        return inpainting_unet_input(
            latents,
            np.concatenate([self.mask] * copies),
            np.concatenate([self.masked_picture_latents] * copies),
        )

    def after_step(
        self, latents: np.ndarray, denoised: np.ndarray, next_timestep: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """A 4-channel UNet's step ends with the area to keep put back; a 9-channel one's as is."""
        if self.picture_latents is None:
            return latents, denoised
        return keep_outside_mask(
            self.scheduler,
            latents,
            denoised,
            self.picture_latents,
            self.noise,
            self.mask,
            next_timestep,
        )


def prepare_inpainting(
    pixels: np.ndarray,
    mask: np.ndarray,
    *,
    latent_shape: tuple[int, int, int, int],
    unet_channels: int,
    strength: float,
    first_timestep: int,
    latents: np.ndarray | None,
    encode: Encode,
    encoder_draws: bool,
    generator: TorchGenerator,
    scheduler: LCMScheduler,
    scale: int,
) -> tuple[np.ndarray, Inpainting]:
    """The starting latents and the ``Inpainting`` state, from the pictures' ``pixels``
    (n, 3, H, W) in [-1, 1] and the binary ``mask`` (1 or n, 1, H, W); ``encode`` runs the VAE
    encoder with ``generator`` (``encoder_draws``: whether it makes a posterior draw)."""
    if unet_channels not in UNET_CHANNELS:
        raise ModelError(
            f"an inpainting UNet has 4 or 9 input channels (diffusers), this one {unet_channels}"
        )
    batch = latent_shape[0]
    full_strength = strength == 1.0
    picture_latents = None
    if unet_channels == 4 or (latents is None and not full_strength):
        picture_latents = repeat_for_batch(encode("vae_encoder", pixels), batch)
    noise = generator.randn(latent_shape) if latents is None else latents
    if latents is None and not full_strength:
        start = scheduler.add_noise(picture_latents, noise, first_timestep)
    else:
        start = noise
    masked = masked_pictures(pixels, mask)
    batch_mask = repeat_for_batch(latent_mask(mask, scale), batch)
    if unet_channels == 4:
        if encoder_draws:  # the posterior draw of the encode a 4-channel UNet does not need
            generator.randn((masked.shape[0], *latent_shape[1:]))
        return start, Inpainting(scheduler, batch_mask, noise, picture_latents=picture_latents)
    masked_latents = repeat_for_batch(encode("vae_encoder_masked", masked), batch)
    return start, Inpainting(scheduler, batch_mask, noise, masked_picture_latents=masked_latents)
