"""The networks of an LCM as OpenVINO IR sees them: input and output names, types and shapes.

Names and dynamic dimensions follow optimum-intel's OpenVINO export configs (``UNetOpenVINOConfig``,
``VaeDecoderOnnxConfig``, ...), which is what ``openvino_genai.Text2ImagePipeline`` feeds: the
UNet's ``timestep`` is int64 of shape [batch], ``timestep_cond`` is LCM's embedding of the
guidance scale ``w`` (diffusers' ``get_guidance_scale_embedding``), and the VAE decoder decodes
``z`` as given: the runtime multiplies by ``1 / scaling_factor`` first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import openvino as ov
import torch
from diffusers import AutoencoderKL, AutoencoderTiny, ControlNetModel, UNet2DConditionModel
from transformers import CLIPTextModel

DYNAMIC = -1


@dataclass(frozen=True)
class Network:
    """A module to trace, with named inputs (shape with ``DYNAMIC`` dims, element type), example
    values for the trace, output names, and the writer of its ``config.json``."""

    folder: str
    module: torch.nn.Module
    inputs: dict[str, tuple[list[int], ov.Type]]
    example: dict[str, torch.Tensor]
    outputs: tuple[str, ...]
    write_config: Callable[[Path], None]


class _TextEncoderOutputs(torch.nn.Module):
    """CLIPTextModel returning ``(last_hidden_state, pooler_output)``."""

    def __init__(self, text_encoder: CLIPTextModel) -> None:
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.text_encoder(input_ids=input_ids)
        return output.last_hidden_state, output.pooler_output


class _UNetNoise(torch.nn.Module):
    """UNet2DConditionModel returning the predicted noise for LCM's conditioned call."""

    def __init__(self, unet: UNet2DConditionModel) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep_cond: torch.Tensor,
    ) -> torch.Tensor:
        return self.unet(
            sample, timestep, encoder_hidden_states, timestep_cond=timestep_cond
        ).sample


class _PlainUNetNoise(_UNetNoise):
    """A Stable Diffusion UNet2DConditionModel (no guidance embedding) returning its noise."""

    def forward(  # type: ignore[override]
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states).sample


class _ControlNetResiduals(torch.nn.Module):
    """ControlNetModel returning its down-block residuals and its mid-block residual, unscaled
    (``conditioning_scale`` 1: the runtime scales them, as diffusers' ``conditioning_scale``)."""

    def __init__(self, controlnet: ControlNetModel) -> None:
        super().__init__()
        self.controlnet = controlnet

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        controlnet_cond: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        down, mid = self.controlnet(
            sample, timestep, encoder_hidden_states, controlnet_cond, return_dict=False
        )
        return (*down, mid)


class _VaeDecoder(torch.nn.Module):
    """AutoencoderKL's or AutoencoderTiny's ``decode``: image in [-1, 1] from latents ``z`` (not
    yet unscaled)."""

    def __init__(self, vae: AutoencoderKL | AutoencoderTiny) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent_sample).sample


class _VaeEncoder(torch.nn.Module):
    """AutoencoderKL's encoder: the mean and log-variance of the latent Gaussian, stacked."""

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(sample).latent_dist.parameters


class _TinyVaeEncoder(torch.nn.Module):
    """AutoencoderTiny's encoder: the latents themselves (TAESD's encoder is deterministic)."""

    def __init__(self, vae: AutoencoderTiny) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(sample).latents


def text_encoder_networks(text_encoder: CLIPTextModel) -> list[Network]:
    """``input_ids`` int64 [batch, 77] -> ``last_hidden_state``, ``pooler_output``."""
    length = text_encoder.config.max_position_embeddings
    return [
        Network(
            folder="text_encoder",
            module=_TextEncoderOutputs(text_encoder),
            inputs={"input_ids": ([DYNAMIC, length], ov.Type.i64)},
            example={"input_ids": torch.zeros((1, length), dtype=torch.int64)},
            outputs=("last_hidden_state", "pooler_output"),
            write_config=text_encoder.config.save_pretrained,
        )
    ]


def unet_networks(unet: UNet2DConditionModel, *, text_length: int) -> list[Network]:
    """``sample``, ``timestep``, ``encoder_hidden_states``, ``timestep_cond`` -> ``out_sample``.

    ``encoder_hidden_states`` has ``text_length`` tokens, the text encoder's positions (77).
    The example latent has odd sides, as optimum-intel's (``height - 1``): diffusers then sizes
    each upsampling after its skip connection, so the trace serves every latent size.
    """
    config = unet.config
    side = 4 * 2 ** (len(config.block_out_channels) - 1) - 1
    inputs = {
        "sample": ([DYNAMIC, config.in_channels, DYNAMIC, DYNAMIC], ov.Type.f32),
        "timestep": ([DYNAMIC], ov.Type.i64),
        "encoder_hidden_states": ([DYNAMIC, text_length, config.cross_attention_dim], ov.Type.f32),
    }
    example = {
        "sample": torch.zeros((1, config.in_channels, side, side)),
        "timestep": torch.tensor([999], dtype=torch.int64),
        "encoder_hidden_states": torch.zeros((1, text_length, config.cross_attention_dim)),
    }
    if config.time_cond_proj_dim is not None:  # an LCM; a plain SD UNet has no timestep_cond
        inputs["timestep_cond"] = ([DYNAMIC, config.time_cond_proj_dim], ov.Type.f32)
        example["timestep_cond"] = torch.zeros((1, config.time_cond_proj_dim))
    return [
        Network(
            folder="unet",
            module=(_UNetNoise if "timestep_cond" in inputs else _PlainUNetNoise)(unet),
            inputs=inputs,
            example=example,
            outputs=("out_sample",),
            write_config=unet.save_config,
        )
    ]


def controlnet_networks(controlnet: ControlNetModel) -> list[Network]:
    """``sample``, ``timestep``, ``encoder_hidden_states``, ``controlnet_cond`` (the control
    picture, RGB in [0, 1] at 8x the latent size) -> ``down_block_res_sample_<i>`` (one per skip
    connection of the UNet: 12 for SD 1.5) and ``mid_block_res_sample``. The example latent has
    odd sides, as the UNet's."""
    config = controlnet.config
    side = 4 * 2 ** (len(config.block_out_channels) - 1) - 1
    scale = 2 ** (len(config.conditioning_embedding_out_channels) - 1)  # pixels per latent
    conditioning = config.conditioning_channels
    inputs = {
        "sample": ([DYNAMIC, config.in_channels, DYNAMIC, DYNAMIC], ov.Type.f32),
        "timestep": ([DYNAMIC], ov.Type.i64),
        "encoder_hidden_states": ([DYNAMIC, DYNAMIC, config.cross_attention_dim], ov.Type.f32),
        "controlnet_cond": ([DYNAMIC, conditioning, DYNAMIC, DYNAMIC], ov.Type.f32),
    }
    example = {
        "sample": torch.zeros((1, config.in_channels, side, side)),
        "timestep": torch.tensor([999], dtype=torch.int64),
        "encoder_hidden_states": torch.zeros((1, 77, config.cross_attention_dim)),
        "controlnet_cond": torch.zeros((1, conditioning, side * scale, side * scale)),
    }
    residuals = len(controlnet.controlnet_down_blocks)
    return [
        Network(
            folder="controlnet",
            module=_ControlNetResiduals(controlnet),
            inputs=inputs,
            example=example,
            outputs=(
                *(f"down_block_res_sample_{i}" for i in range(residuals)),
                "mid_block_res_sample",
            ),
            write_config=controlnet.save_config,
        )
    ]


def vae_networks(vae: AutoencoderKL | AutoencoderTiny, *, with_encoder: bool) -> list[Network]:
    """The decoder (``latent_sample`` -> ``sample``) and, if asked, the encoder (``sample`` ->
    ``latent_parameters`` of an AutoencoderKL, ``latent_sample`` of an AutoencoderTiny), both
    with the VAE's config."""
    config = vae.config
    networks = [
        Network(
            folder="vae_decoder",
            module=_VaeDecoder(vae),
            inputs={
                "latent_sample": ([DYNAMIC, config.latent_channels, DYNAMIC, DYNAMIC], ov.Type.f32)
            },
            example={"latent_sample": torch.zeros((1, config.latent_channels, 8, 8))},
            outputs=("sample",),
            write_config=vae.save_config,
        )
    ]
    if with_encoder:
        tiny = isinstance(vae, AutoencoderTiny)
        networks.append(
            Network(
                folder="vae_encoder",
                module=_TinyVaeEncoder(vae) if tiny else _VaeEncoder(vae),
                inputs={"sample": ([DYNAMIC, config.in_channels, DYNAMIC, DYNAMIC], ov.Type.f32)},
                example={"sample": torch.zeros((1, config.in_channels, 64, 64))},
                outputs=("latent_sample" if tiny else "latent_parameters",),
                write_config=vae.save_config,
            )
        )
    return networks
