"""The VAE a call decodes (and encodes) with (``Vae``): the model's own, or the tiny autoencoder
TAESD (diffusers' ``AutoencoderTiny``), a decoder about 18x cheaper than SD1.5's
``AutoencoderKL``, for faster final images and for previews of every step.

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
from typing import Literal

from lcm_lite.errors import ModelError
from lcm_lite.models.configs import VAEConfig
from lcm_lite.models.folder import ModelFolder, component_files
from lcm_lite.models.hub import VAE_ENCODER_FILES, resolve, resolve_model

DEFAULT_TINY_VAE = "rupeshs/taesd-ov"
TINY_VAE_FILES = ["vae_decoder/*"]
CONVERT_TAESD = "convert it once with `lcm-lite-convert madebyollin/taesd FOLDER`"


@dataclass(frozen=True)
class Vae:
    """One autoencoder a call may decode (and encode) with: the model's own (``kind`` "full") or
    a tiny one (TAESD, "tiny"), with the hub repository ``root`` is a snapshot of, if any."""

    kind: Literal["full", "tiny"]
    root: Path
    config: VAEConfig  # the decoder's
    hub_id: str | None = None

    @property
    def name(self) -> str:
        """``vae`` or ``tiny_vae``: its networks' names in timings (``compile_vae_decoder``)."""
        return "vae" if self.kind == "full" else "tiny_vae"

    @property
    def label(self) -> str:
        return "VAE" if self.kind == "full" else "tiny VAE"

    @property
    def xml(self) -> Path:
        return component_files(self.root, "vae_decoder").xml

    @property
    def encoder_xml(self) -> Path:
        return component_files(self.root, "vae_encoder").xml

    def encoder_config(self) -> VAEConfig:
        return VAEConfig.read(component_files(self.root, "vae_encoder").config)

    def fetch_encoder(self) -> None:
        """Image to image encodes with the VAE in use, as diffusers' img2img pipeline with its
        ``vae``. Text to image reads no encoder, so a hub snapshot's is downloaded here, on the
        first call with a picture; a one-line ModelError that says what to do without one."""
        if self.kind == "full":
            fetch = resolve_model
            needs = f"{self.hub_id or self.root} has no VAE encoder (vae_encoder/), which image "
            needs += "to image needs"
            convert = "convert the model with `lcm-lite-convert SOURCE OUT_DIR --with-vae-encoder`"
        else:
            fetch = resolve_tiny_vae
            needs = f"the tiny VAE {self.hub_id or self.root} has no encoder (vae_encoder/), which "
            needs += 'image to image with vae="tiny" (--vae tiny) needs'
            convert = f'{CONVERT_TAESD}, which writes both halves, or use vae="full" (--vae full)'
        if not self.encoder_xml.is_file() and self.hub_id is not None:  # the snapshot's commit
            fetch(self.hub_id, self.root.name, files=VAE_ENCODER_FILES)
        if self.encoder_xml.is_file():
            return
        if self.hub_id is None:
            raise ModelError(f"{needs}: {convert}")
        raise ModelError(
            f"{needs}, in the local Hugging Face cache and none could be downloaded: on a "
            f"connected machine run `hf download {self.hub_id} --include 'vae_encoder/*'`, or "
            f"{convert}"
        )

    @classmethod
    def of_model(cls, folder: ModelFolder, hub_id: str | None = None) -> Vae:
        return cls("full", folder.root, folder.vae, hub_id)

    @classmethod
    def open_tiny(cls, root: Path, hub_id: str | None = None) -> Vae:
        decoder = component_files(root, "vae_decoder")
        for path in decoder:
            if not path.is_file():
                raise ModelError(f"{root} is not a tiny VAE folder: {path} is missing")
        config = VAEConfig.read(decoder.config)
        if not config.is_tiny:
            raise ModelError(
                f"{root} is not a tiny VAE: {decoder.config} describes an "
                f"{config.class_name}, not an AutoencoderTiny"
            )
        return cls("tiny", root, config, hub_id)


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


def load_tiny_vae(name: str | Path, folder: ModelFolder) -> Vae:
    """The tiny VAE ``name`` (a folder or a hub id), checked against the model it decodes for."""
    root = resolve_tiny_vae(name)
    tiny = Vae.open_tiny(root, None if root == Path(name).expanduser() else str(name))
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


def own_tiny_vae(folder: ModelFolder, hub_id: str | None = None) -> Vae | None:
    """The model's own decoder if it is TAESD (an LCM exported with AutoencoderTiny swapped in);
    ``hub_id``: the hub repository ``folder`` is a snapshot of, if any."""
    return Vae("tiny", folder.root, folder.vae, hub_id) if folder.vae.is_tiny else None
