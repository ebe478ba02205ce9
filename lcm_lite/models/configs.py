"""The model folder's JSON files (``config.json``, ``scheduler_config.json``, tokenizer files),
and what the UNet's and a VAE's ``config.json`` say, read one way (``json_config.from_json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from lcm_lite.errors import ModelError
from lcm_lite.json_config import from_json

T = TypeVar("T")


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a ``ModelError`` naming the file if it is missing, unreadable
    or not an object."""
    if not path.is_file():
        raise ModelError(f"model folder is incomplete: {path} is missing")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read {path}: {error}") from None
    if not isinstance(content, dict):
        raise ModelError(f"cannot read {path}: expected a JSON object")
    return content


def read_config(cls: type[T], path: Path, what: str) -> T:
    """The frozen dataclass ``cls`` from the JSON object in ``path`` (``json_config.from_json``);
    a one-line ModelError naming the file (``what``: "UNet config", ...)."""
    content = read_json_object(path)
    try:
        return from_json(cls, content)
    except ModelError as error:
        raise ModelError(f"bad {what} {path}: {error}") from None


@dataclass(frozen=True)
class UNetConfig:
    """The fields of the UNet's ``config.json`` lcm-lite uses, with diffusers' defaults.

    ``time_cond_proj_dim`` is the guidance-embedding width of an LCM UNet; None (null or absent)
    for a plain Stable Diffusion UNet, run with an LCM-LoRA.
    """

    in_channels: int = 4
    sample_size: int = 64
    layers_per_block: int = 2
    time_cond_proj_dim: int | None = None
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    cross_attention_dim: int = 1280

    @classmethod
    def read(cls, path: Path) -> UNetConfig:
        return read_config(cls, path, "UNet config")


@dataclass(frozen=True)
class ControlNetConfig:
    """The fields of a ControlNetModel's ``config.json`` that must match the UNet's, with
    diffusers' defaults; ``conditioning_embedding_out_channels`` sets how many pixels make a
    latent cell (2 ** (its length - 1): 8)."""

    _class_name: str = ""
    in_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    cross_attention_dim: int = 1280
    conditioning_embedding_out_channels: tuple[int, ...] = (16, 32, 96, 256)

    @classmethod
    def read(cls, path: Path) -> ControlNetConfig:
        return read_config(cls, path, "ControlNet config")

    @property
    def pixels_per_latent(self) -> int:
        return 2 ** (len(self.conditioning_embedding_out_channels) - 1)


# diffusers' defaults for what a VAE's config.json may leave out, per class.
_VAE_SCALING_FACTORS = {"AutoencoderKL": 0.18215, "AutoencoderTiny": 1.0}


@dataclass(frozen=True)
class _VAEFile:
    """What ``VAEConfig`` is made of: a VAE's ``config.json`` values, diffusers' defaults for the
    ones left out (``scaling_factor``: None, the class's)."""

    _class_name: str = "AutoencoderKL"
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] | None = None
    decoder_block_out_channels: tuple[int, ...] | None = None
    upsampling_scaling_factor: int = 2
    scaling_factor: float | None = None
    shift_factor: float | None = None


@dataclass(frozen=True)
class VAEConfig:
    """A VAE decoder's or encoder's ``config.json``: which autoencoder it is and how latents
    leave and reach it.

    Both diffusers classes lcm-lite decodes, ``AutoencoderKL`` and ``AutoencoderTiny`` (TAESD),
    return the image in [-1, 1] from ``decode(latents / scaling_factor + shift_factor)``;
    ``scaling_factor`` defaults per class as in diffusers (0.18215 for SD1.5's KL, 1.0 for TAESD).
    """

    class_name: str
    latent_channels: int
    pixels_per_latent: int
    scaling_factor: float
    shift_factor: float

    @classmethod
    def read(cls, path: Path) -> VAEConfig:
        raw = read_config(_VAEFile, path, "VAE config")
        if raw._class_name not in _VAE_SCALING_FACTORS:
            raise ModelError(
                f"{path} describes a {raw._class_name}; lcm-lite decodes with an "
                f"{' or '.join(_VAE_SCALING_FACTORS)}"
            )
        # AutoencoderTiny also records its decoder's channels as block_out_channels.
        blocks = raw.block_out_channels or raw.decoder_block_out_channels or (0,) * 4
        return cls(
            class_name=raw._class_name,
            latent_channels=raw.latent_channels,
            pixels_per_latent=raw.upsampling_scaling_factor ** (len(blocks) - 1),
            scaling_factor=raw.scaling_factor or _VAE_SCALING_FACTORS[raw._class_name],
            shift_factor=raw.shift_factor or 0.0,
        )

    @property
    def is_tiny(self) -> bool:
        return self.class_name == "AutoencoderTiny"

    def decoder_input(self, latents: np.ndarray) -> np.ndarray:
        """What the decoder takes: ``latents / scaling_factor + shift_factor``, as diffusers."""
        return latents / np.float32(self.scaling_factor) + np.float32(self.shift_factor)

    def encoder_output(self, latents: np.ndarray) -> np.ndarray:
        """The encoder's latents as the UNet sees them: ``(latents - shift_factor) *
        scaling_factor``, as diffusers' image-to-image pipelines."""
        return (latents - np.float32(self.shift_factor)) * np.float32(self.scaling_factor)
