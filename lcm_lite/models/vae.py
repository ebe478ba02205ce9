"""The tiny autoencoder TAESD (diffusers' ``AutoencoderTiny``): a decoder about 18x cheaper than
SD1.5's ``AutoencoderKL``, for faster final images and for previews of every step.

A tiny-VAE folder is the layout FastSD CPU downloads (``rupeshs/taesd-ov``) and
``lcm-lite-convert madebyollin/taesd FOLDER`` writes::

    vae_decoder/  openvino_model.xml/.bin, config.json (AutoencoderTiny): latents -> [-1, 1]
    vae_encoder/  the same for image -> latents: image to image with ``vae="tiny"`` only

With ``vae="tiny"`` the tiny VAE is the pipeline's VAE, as ``vae=AutoencoderTiny(...)`` is in
diffusers: image to image encodes the picture with its encoder too. A hub tiny VAE's encoder is
downloaded on the first such call (``TINY_VAE_FILES`` are what text to image reads).

TAESD approximates the full VAE: its images are close to, not equal to, the full decoder's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lcm_lite.errors import ModelError
from lcm_lite.models.configs import VAEConfig
from lcm_lite.models.folder import ModelFolder
from lcm_lite.models.hub import resolve

DEFAULT_TINY_VAE = "rupeshs/taesd-ov"
TINY_VAE_FILES = ["vae_decoder/*"]
CONVERT_TAESD = "convert it once with `lcm-lite-convert madebyollin/taesd FOLDER`"


@dataclass(frozen=True)
class TinyVAE:
    """A checked tiny-VAE decoder: its IR and its config, and the hub repository ``root`` is a
    snapshot of, if any (its encoder is fetched from there when image to image needs it)."""

    root: Path
    config: VAEConfig
    hub_id: str | None = None

    @property
    def xml(self) -> Path:
        return self.root / "vae_decoder" / "openvino_model.xml"

    @classmethod
    def open(cls, root: Path, hub_id: str | None = None) -> TinyVAE:
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
        return cls(root, config, hub_id)


def resolve_tiny_vae(
    name: str | Path, revision: str | None = None, *, files: list[str] = TINY_VAE_FILES
) -> Path:
    """The local folder of the tiny VAE ``name``: itself, or the hub snapshot of its ``files``
    (fetched like the model: see ``hub``)."""
    return resolve(
        str(name),
        revision,
        what="tiny VAE",
        files=files,
        option="--tiny-vae",
        alternative=CONVERT_TAESD,
    )


def load_tiny_vae(name: str | Path, folder: ModelFolder) -> TinyVAE:
    """The tiny VAE ``name`` (a folder or a hub id), checked against the model it decodes for."""
    root = resolve_tiny_vae(name)
    tiny = TinyVAE.open(root, None if root == Path(name).expanduser() else str(name))
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


def own_tiny_vae(folder: ModelFolder, hub_id: str | None = None) -> TinyVAE | None:
    """The model's own decoder if it is TAESD (an LCM exported with AutoencoderTiny swapped in);
    ``hub_id``: the hub repository ``folder`` is a snapshot of, if any."""
    return TinyVAE(folder.root, folder.vae, hub_id) if folder.vae.is_tiny else None
