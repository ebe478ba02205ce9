"""The OpenVINO networks of an LCM, and image-to-image's VAE encoder, each reshaped to static
shapes and compiled once; the text encoder and UNet with the LoRA adapters given (``lora``).

Inputs are bound by *role*, not by name alone: exports differ (optimum-intel has been seen to emit
a UNet whose ``timestep`` input lost its name, e.g. ``57``, or is int64 rather than float32).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov

from lcm_lite.errors import ModelError
from lcm_lite.models.clip_skip import output_hidden_state
from lcm_lite.models.configs import VAEConfig
from lcm_lite.models.folder import ModelFolder, component_files
from lcm_lite.models.lora_branches import LORA_WEIGHTS_INPUT, Branches
from lcm_lite.models.unet_residuals import (
    add_residual_inputs,
    is_residual_input,
    residual_names,
)
from lcm_lite.runtime.compiler import Compiler
from lcm_lite.sampling.torch_rng import TorchGenerator


@dataclass(frozen=True)
class UNetPorts:
    """Indices of the UNet inputs by role; a plain Stable Diffusion UNet has no timestep_cond."""

    sample: int
    timestep: int
    encoder_hidden_states: int
    timestep_cond: int | None = None


def bind_unet_inputs(model: ov.Model | ov.CompiledModel) -> UNetPorts:
    """Find each UNet input by its name, else by its rank: sample 4-D, encoder_hidden_states 3-D,
    timestep_cond 2-D, timestep 0-D or 1-D (the one optimum-intel sometimes leaves unnamed).
    ControlNet residual inputs (``unet_residuals``) and the LoRA weights have no role here."""
    by_role: dict[str, int] = {}
    unnamed: list[int] = []
    for index, port in enumerate(model.inputs):
        if is_residual_input(port) or LORA_WEIGHTS_INPUT in port.get_names():
            continue
        role = next((r for r in UNetPorts.__dataclass_fields__ if r in port.get_names()), None)
        if role is None:
            unnamed.append(index)
        else:
            by_role[role] = index
    roles_by_rank = {
        4: "sample",
        3: "encoder_hidden_states",
        2: "timestep_cond",
        1: "timestep",
        0: "timestep",
    }
    for index in unnamed:
        rank = model.inputs[index].get_partial_shape().rank
        role = roles_by_rank.get(rank.get_length()) if rank.is_static else None
        if role is None or role in by_role:
            raise ModelError(f"cannot tell the role of UNet input {model.inputs[index].any_name!r}")
        by_role[role] = index
    required = [role for role in UNetPorts.__dataclass_fields__ if role != "timestep_cond"]
    missing = [role for role in required if role not in by_role]
    if missing:
        raise ModelError(f"the UNet has no {', '.join(missing)} input: not a UNet export")
    return UNetPorts(**by_role)


def _check_guidance_dim(model: ov.Model, ports: UNetPorts, folder: ModelFolder) -> None:
    """The IR takes ``timestep_cond`` of the config's ``time_cond_proj_dim`` width, or neither."""
    if ports.timestep_cond is None:
        if folder.time_cond_proj_dim is not None:
            raise ModelError(
                "the UNet has no timestep_cond input: not a latent consistency model export"
            )
        return
    config = component_files(folder.root, "unet").config
    if folder.time_cond_proj_dim is None:
        raise ModelError(
            f"{config} does not match the UNet IR: it has no "
            "time_cond_proj_dim, the IR takes timestep_cond"
        )
    width = model.inputs[ports.timestep_cond].get_partial_shape()[-1]
    if width.is_static and width.get_length() != folder.time_cond_proj_dim:
        raise ModelError(
            f"{config} does not match the UNet IR: it says "
            f"time_cond_proj_dim {folder.time_cond_proj_dim}, the IR takes {width.get_length()}"
        )


def _check_channels(model: ov.Model, ports: UNetPorts, folder: ModelFolder) -> None:
    """The IR's sample takes the config's ``in_channels`` (4, or 9 for an inpainting UNet)."""
    channels = model.inputs[ports.sample].get_partial_shape()[1]
    if channels.is_static and channels.get_length() != folder.unet_channels:
        config = component_files(folder.root, "unet").config
        raise ModelError(
            f"{config} does not match the UNet IR: it says in_channels {folder.unet_channels}, "
            f"the IR takes {channels.get_length()}"
        )


def timestep_shape(port: ov.Output) -> tuple[int, ...]:
    """A scalar input stays a scalar; a 1-D input takes one timestep that the graph broadcasts."""
    return () if port.get_partial_shape().rank.get_length() == 0 else (1,)


class _Blended:
    """A network that may take the LoRA adapters' weights as its ``lora_weights`` input
    (``Branches(runtime=True)``); ``blend`` sets them for the calls that follow."""

    compiled: ov.CompiledModel
    request: ov.InferRequest

    def blend(self, weights: Sequence[float]) -> None:
        """Feed ``weights`` (one per adapter loaded, in load order) to the ``lora_weights``
        input, if the network has one (else its weights are compiled in: nothing to do)."""
        port = next((p for p in self.compiled.inputs if LORA_WEIGHTS_INPUT in p.get_names()), None)
        if port is not None:
            self.request.set_tensor(port, ov.Tensor(np.array(weights, np.float32)))


class TextEncoder(_Blended):
    """CLIP text encoder: input_ids (batch, 77) int -> last_hidden_state (batch, 77, hidden), or
    with ``clip_skip`` the hidden state that many layers before the last through the final layer
    norm (``clip_skip.output_hidden_state``)."""

    def __init__(
        self,
        compiler: Compiler,
        folder: ModelFolder,
        batch: int,
        max_length: int,
        branches: Branches,
        clip_skip: int | None = None,
    ) -> None:
        shape = (batch, max_length)
        add_adapters = branches.transform("text_encoder")

        def transform(model: ov.Model) -> None:
            if add_adapters is not None:
                add_adapters(model)
            if clip_skip is not None:
                output_hidden_state(model, clip_skip, folder.text_encoder_layers())

        compiled = compiler.compile(
            folder.xml("text_encoder"),
            lambda model: {0: shape},
            (shape, branches.request("text_encoder"), clip_skip),
            "text encoder",
            transform if add_adapters is not None or clip_skip is not None else None,
        )
        self.input_type = compiled.inputs[0].get_element_type().to_dtype()
        self.compiled = compiled  # the request needs it alive
        self.request = compiled.create_infer_request()

    def __call__(self, input_ids: np.ndarray) -> np.ndarray:
        self.request.infer({0: input_ids.astype(self.input_type, copy=False)}, share_inputs=True)
        return self.request.get_output_tensor(0).data.copy()


class UNet(_Blended):
    """The UNet: (sample, timestep, encoder_hidden_states[, timestep_cond]) -> model_output; an
    LCM's takes the guidance embedding as ``timestep_cond``, a plain Stable Diffusion one not.
    With ``residual_shapes`` (a ControlNet's outputs), it also takes the residuals diffusers
    calls ``down_block_additional_residuals`` and ``mid_block_additional_residual``
    (``unet_residuals``); without, it is the IR as it is."""

    def __init__(
        self,
        compiler: Compiler,
        folder: ModelFolder,
        latent_shape: tuple[int, ...],
        text_length: int,
        branches: Branches,
        residual_shapes: Sequence[tuple[int, ...]] = (),
    ) -> None:
        def shapes(model: ov.Model) -> dict[int, tuple[object, ...]]:
            ports = bind_unet_inputs(model)
            _check_guidance_dim(model, ports, folder)
            _check_channels(model, ports, folder)
            hidden_size = model.inputs[ports.encoder_hidden_states].get_partial_shape()[2]
            fixed = {
                ports.sample: latent_shape,
                ports.timestep: timestep_shape(model.inputs[ports.timestep]),
                ports.encoder_hidden_states: (latent_shape[0], text_length, hidden_size),
            }
            if ports.timestep_cond is not None:
                fixed[ports.timestep_cond] = (latent_shape[0], folder.time_cond_proj_dim)
            return fixed

        request = (
            latent_shape,
            text_length,
            folder.time_cond_proj_dim,
            branches.request("unet"),
            *([("residuals", tuple(residual_shapes))] if residual_shapes else []),
        )
        compiled = compiler.compile(
            folder.xml("unet"),
            shapes,
            request,
            "UNet",
            _unet_transform(branches.transform("unet"), residual_shapes),
        )
        self.ports = bind_unet_inputs(compiled)
        self.residual_ports = [
            compiled.input(name) for name in residual_names(len(residual_shapes))
        ]
        timestep_port = compiled.inputs[self.ports.timestep]
        self.timestep_type = timestep_port.get_element_type().to_dtype()
        self.timestep_shape = timestep_shape(timestep_port)
        self.compiled = compiled  # the request needs it alive
        self.request = compiled.create_infer_request()

    def __call__(
        self,
        sample: np.ndarray,
        timestep: int,
        encoder_hidden_states: np.ndarray,
        timestep_cond: np.ndarray | None,
        residuals: Sequence[np.ndarray] = (),
    ) -> np.ndarray:
        """One UNet evaluation (``timestep_cond`` None for a plain Stable Diffusion UNet;
        ``residuals`` those of its ControlNets, when compiled to take them); the returned array
        is a view valid until the next call."""
        inputs = self.inputs(sample, timestep, encoder_hidden_states, timestep_cond, residuals)
        self.request.infer(inputs, share_inputs=True)
        return self.request.get_output_tensor(0).data

    def inputs(
        self,
        sample: np.ndarray,
        timestep: int,
        encoder_hidden_states: np.ndarray,
        timestep_cond: np.ndarray | None,
        residuals: Sequence[np.ndarray] = (),
    ) -> dict[object, np.ndarray]:
        """The IR's inputs of one evaluation, by input index (the IR's order) or port."""
        inputs: dict[object, np.ndarray] = {
            self.ports.sample: sample,
            self.ports.timestep: np.full(self.timestep_shape, timestep, self.timestep_type),
            self.ports.encoder_hidden_states: encoder_hidden_states,
        }
        if self.ports.timestep_cond is not None:
            inputs[self.ports.timestep_cond] = timestep_cond
        inputs.update(zip(self.residual_ports, residuals, strict=True))
        return inputs


def _unet_transform(
    adapters: Callable[[ov.Model], None] | None, residual_shapes: Sequence[tuple[int, ...]]
) -> Callable[[ov.Model], None] | None:
    """The UNet's graph edits: the LoRA adapters' branches, then the ControlNet residual inputs;
    None when there are neither (the IR as it is)."""
    if not residual_shapes:
        return adapters

    def transform(model: ov.Model) -> None:
        if adapters is not None:
            adapters(model)
        add_residual_inputs(model, residual_shapes)

    return transform


class VAEDecoder:
    """VAE decoder (AutoencoderKL or AutoencoderTiny): latents (batch, 4, h, w) -> image
    (batch, 3, h*8, w*8) in [-1, 1]."""

    def __init__(
        self, compiler: Compiler, xml: Path, latent_shape: tuple[int, ...], name: str
    ) -> None:
        self.compiled = compiler.compile(
            xml, lambda model: {0: latent_shape}, latent_shape, name
        )  # the request needs it alive
        self.request = self.compiled.create_infer_request()

    def __call__(self, latents: np.ndarray) -> np.ndarray:
        self.request.infer({0: latents}, share_inputs=True)
        return self.request.get_output_tensor(0).data


class VAEEncoder:
    """VAE encoder (AutoencoderKL or AutoencoderTiny): pictures (batch, 3, H, W) in [-1, 1] ->
    scaled latents (batch, C, H/8, W/8).

    An AutoencoderKL encoder outputs ``latent_parameters``, the mean and log-variance of the
    latent Gaussian (diffusers' ``DiagonalGaussianDistribution``, log-variance clamped to
    [-30, 20]), sampled as ``mean + std * noise`` with one draw of the caller's generator for the
    whole batch (``retrieve_latents(..., sample_mode="sample")``). An encoder that outputs
    ``C`` channels returns latents directly (AutoencoderTiny's ``latents``) and draws nothing.
    Then ``(latents - shift_factor) * scaling_factor``, from ``config`` (the encoder's own
    ``config.json``). Compiled for one picture at a time: the batch size never recompiles it.
    """

    def __init__(
        self,
        compiler: Compiler,
        xml: Path,
        config: VAEConfig,
        latent_shape: tuple[int, ...],
        name: str,
    ) -> None:
        scale = config.pixels_per_latent
        shape = (1, 3, latent_shape[2] * scale, latent_shape[3] * scale)
        self.compiled = compiler.compile(
            xml, lambda model: {0: shape}, shape, name
        )  # the request needs it alive
        self.request = self.compiled.create_infer_request()
        self.latent_channels = latent_shape[1]
        self.config = config

    def __call__(self, pixels: np.ndarray, generator: TorchGenerator) -> np.ndarray:
        outputs = []
        for picture in pixels:
            self.request.infer({0: picture[None]}, share_inputs=True)
            outputs.append(self.request.get_output_tensor(0).data.copy())
        encoded = np.concatenate(outputs)
        if encoded.shape[1] == 2 * self.latent_channels:
            mean, log_variance = np.split(encoded, 2, axis=1)
            std = np.exp(np.float32(0.5) * np.clip(log_variance, -30.0, 20.0))
            latents = mean + std * generator.randn(mean.shape)
        elif encoded.shape[1] == self.latent_channels:
            latents = encoded
        else:
            raise ModelError(
                f"the VAE encoder outputs {encoded.shape[1]} channels; expected "
                f"{2 * self.latent_channels} (latent_parameters) or {self.latent_channels}"
            )
        return self.config.encoder_output(latents)
