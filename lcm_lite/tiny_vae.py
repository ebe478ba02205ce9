"""The tiny autoencoder TAESD (diffusers' ``AutoencoderTiny``): a decoder about 18x cheaper than
SD1.5's ``AutoencoderKL``, for faster final images and for previews of every step.

A tiny-VAE folder is the layout FastSD CPU downloads (``rupeshs/taesd-ov``) and
``lcm-lite-convert madebyollin/taesd FOLDER`` writes::

    vae_decoder/  openvino_model.xml/.bin, config.json (AutoencoderTiny): latents -> [-1, 1]
    vae_encoder/  the same for image -> latents (not needed for text-to-image)

TAESD approximates the full VAE: its images are close to, not equal to, the full decoder's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .configs import VAEConfig
from .errors import ModelError
from .folder import ModelFolder
from .hub import resolve

DEFAULT_TINY_VAE = "rupeshs/taesd-ov"
TINY_VAE_FILES = ["vae_decoder/*"]


@dataclass(frozen=True)
class TinyVAE:
    """A checked tiny-VAE decoder: its IR and its config."""

    root: Path
    config: VAEConfig

    @property
    def xml(self) -> Path:
        return self.root / "vae_decoder" / "openvino_model.xml"

    @classmethod
    def open(cls, root: Path) -> TinyVAE:
        decoder = root / "vae_decoder"
        for name in ("openvino_model.xml", "openvino_model.bin", "config.json"):
            if not (decoder / name).is_file():
                raise ModelError(f"{root} is not a tiny VAE folder: {decoder / name} is missing")
        config = VAEConfig.read(decoder / "config.json")
        if not config.is_tiny:
            raise ModelError(
                f"{root} is not a tiny VAE: {decoder / 'config.json'} describes an "
                f"{config.class_name}, not an AutoencoderTiny"
            )
        return cls(root, config)


def load_tiny_vae(name: str | Path, folder: ModelFolder) -> TinyVAE:
    """The tiny VAE ``name`` (a folder or a hub id, fetched like the model: see ``hub``), checked
    against the model it decodes for."""
    root = resolve(
        str(name),
        None,
        what="tiny VAE",
        files=TINY_VAE_FILES,
        option="--tiny-vae",
        alternative="convert it once with `lcm-lite-convert madebyollin/taesd FOLDER`",
    )
    tiny = TinyVAE.open(root)
    if tiny.config.latent_channels != folder.latent_channels:
        raise ModelError(
            f"the tiny VAE {root} decodes {tiny.config.latent_channels}-channel latents but the "
            f"model {folder.root} makes {folder.latent_channels}-channel ones: use a tiny VAE "
            "trained for this model's latent space (madebyollin/taesd for SD 1.x)"
        )
    if tiny.config.pixels_per_latent != folder.vae_scale_factor:
        raise ModelError(
            f"the tiny VAE {root} upsamples latents {tiny.config.pixels_per_latent}x, the model's "
            f"VAE {folder.vae_scale_factor}x: they do not share a latent space"
        )
    return tiny


def own_tiny_vae(folder: ModelFolder) -> TinyVAE | None:
    """The model's own decoder if it is TAESD (an LCM exported with AutoencoderTiny swapped in)."""
    return TinyVAE(folder.root, folder.vae) if folder.vae.is_tiny else None
