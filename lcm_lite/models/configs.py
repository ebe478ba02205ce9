"""The model folder's JSON files (``config.json``, ``scheduler_config.json``, tokenizer files),
and what a VAE's ``config.json`` says."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lcm_lite.errors import ModelError


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


# diffusers' defaults for what a VAE's config.json may leave out, per class.
_VAE_SCALING_FACTORS = {"AutoencoderKL": 0.18215, "AutoencoderTiny": 1.0}


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
        config = read_json_object(path)
        class_name = config.get("_class_name", "AutoencoderKL")
        if class_name not in _VAE_SCALING_FACTORS:
            raise ModelError(
                f"{path} describes a {class_name}; lcm-lite decodes with an "
                f"{' or '.join(_VAE_SCALING_FACTORS)}"
            )
        # AutoencoderTiny also records its decoder's channels as block_out_channels.
        blocks = config.get("block_out_channels") or config.get("decoder_block_out_channels")
        upsampling = config.get("upsampling_scaling_factor", 2)
        return cls(
            class_name=class_name,
            latent_channels=int(config.get("latent_channels", 4)),
            pixels_per_latent=int(upsampling ** (len(blocks or [0] * 4) - 1)),
            scaling_factor=float(config.get("scaling_factor") or _VAE_SCALING_FACTORS[class_name]),
            shift_factor=float(config.get("shift_factor") or 0.0),
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
