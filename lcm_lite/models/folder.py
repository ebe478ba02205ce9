"""The model folder: the ecosystem's layout (what optimum-intel and ``lcm-lite-convert`` write and
``openvino_genai.Text2ImagePipeline`` reads), checked, with the configuration numbers the pipeline
needs::

    model_index.json  scheduler/scheduler_config.json  tokenizer/
    text_encoder/ unet/ vae_decoder/   each: openvino_model.xml, openvino_model.bin, config.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lcm_lite.errors import ModelError
from lcm_lite.models.configs import UNetConfig, VAEConfig, read_config, read_json_object
from lcm_lite.sampling.scheduler import LCMSchedulerConfig

COMPONENTS = ("text_encoder", "unet", "vae_decoder")


class ComponentFiles(NamedTuple):
    """One network's files in a model (or tiny-VAE) folder."""

    xml: Path  # the OpenVINO IR
    weights: Path  # its .bin
    config: Path  # diffusers' config.json


def component_files(root: Path, component: str) -> ComponentFiles:
    """The folder layout, spelled once: ``root/component/`` holds ``openvino_model.xml``,
    ``openvino_model.bin`` and ``config.json``."""
    folder = root / component
    return ComponentFiles(
        folder / "openvino_model.xml", folder / "openvino_model.bin", folder / "config.json"
    )


@dataclass(frozen=True)
class ModelFolder:
    """A checked model folder (an LCM, or a Stable Diffusion model for LCM-LoRA) and the
    configuration numbers the pipeline needs from it."""

    root: Path
    unet: UNetConfig
    vae: VAEConfig
    scheduler: LCMSchedulerConfig
    lcm_scheduler: bool  # scheduler_config.json names LCMScheduler

    @classmethod
    def open(cls, root: str | Path) -> ModelFolder:
        root = Path(root)
        if not root.is_dir():
            raise ModelError(f"model folder not found: {root}")
        vae_config = component_files(root, "vae_decoder").config
        if (
            not (root / "unet").exists()
            and vae_config.is_file()
            and VAEConfig.read(vae_config).is_tiny
        ):
            raise ModelError(
                f"{root} is a tiny VAE (AutoencoderTiny), not a latent consistency model: "
                "pass it with --tiny-vae (Python: tiny_vae=)"
            )
        for component in COMPONENTS:
            files = component_files(root, component)
            for path in (files.xml, files.weights):
                if not path.is_file():
                    raise ModelError(f"model folder is incomplete: {path} is missing")
        scheduler_path = root / "scheduler" / "scheduler_config.json"
        if not scheduler_path.is_file():
            raise ModelError(f"model folder is incomplete: {scheduler_path} is missing")
        return cls(
            root,
            UNetConfig.read(component_files(root, "unet").config),
            VAEConfig.read(vae_config),
            read_scheduler_config(scheduler_path),
            read_json_object(scheduler_path).get("_class_name") == "LCMScheduler",
        )

    def check_lcm(self, with_unet_lora: bool) -> None:
        """Refuse a plain Stable Diffusion folder (no ``time_cond_proj_dim``) unless LCM-distilled
        weights are in it (a fused LCM-LoRA: its scheduler is an LCMScheduler) or a UNet LoRA is
        applied (the LCM-LoRA), as diffusers' StableDiffusionPipeline + LCMScheduler run it."""
        if self.time_cond_proj_dim is None and not (self.lcm_scheduler or with_unet_lora):
            raise ModelError(
                f"{self.root} is not a latent consistency model (its UNet has no "
                "time_cond_proj_dim): add an LCM-LoRA to run it in 4 steps, e.g. "
                "--lora latent-consistency/lcm-lora-sdv1-5 (Python: loras=[(hub id, 1.0)])"
            )

    def xml(self, component: str) -> Path:
        return component_files(self.root, component).xml

    def text_encoder_layers(self) -> int:
        """The text encoder's ``num_hidden_layers`` (its config.json; CLIP ViT-L's 12 without)."""
        config = component_files(self.root, "text_encoder").config
        layers = read_json_object(config).get("num_hidden_layers", 12) if config.is_file() else 12
        if type(layers) is not int or layers < 1:
            raise ModelError(f"{config}: num_hidden_layers must be a positive integer")
        return layers

    @property
    def time_cond_proj_dim(self) -> int | None:
        """The guidance-embedding width of an LCM UNet; None for a plain Stable Diffusion UNet."""
        return self.unet.time_cond_proj_dim or None

    @property
    def latent_channels(self) -> int:
        """The latents' channels: the VAE's (4 for SD 1.5)."""
        return self.vae.latent_channels

    @property
    def unet_channels(self) -> int:
        """The UNet's input channels: the latents' (4), or 9 for an inpainting UNet (latents,
        mask and masked picture's latents)."""
        return self.unet.in_channels

    @property
    def is_inpainting(self) -> bool:
        """A 9-channel inpainting UNet (SD 1.5 inpainting fine-tunes): it needs a mask."""
        return self.unet_channels != self.latent_channels

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell: 2 ** (number of VAE blocks - 1), as diffusers computes it."""
        return self.vae.pixels_per_latent

    @property
    def scaling_factor(self) -> float:
        """The VAE latent scale, from the decoder's config (see ``VAEConfig``)."""
        return self.vae.scaling_factor

    @property
    def default_size(self) -> int:
        """The native resolution, ``unet.sample_size * vae_scale_factor`` (512 for SD 1.5)."""
        return self.unet.sample_size * self.vae_scale_factor


def read_scheduler_config(path: Path) -> LCMSchedulerConfig:
    """diffusers' ``scheduler_config.json`` as the sampler's config; errors name the file."""
    return read_config(LCMSchedulerConfig, path, "scheduler config")
