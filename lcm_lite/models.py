"""The model folder and its three OpenVINO networks: find, check, reshape, compile, run.

The folder is the ecosystem's layout (what optimum-intel and ``lcm-lite-convert`` write and
``openvino_genai.Text2ImagePipeline`` reads)::

    model_index.json  scheduler/scheduler_config.json  tokenizer/
    text_encoder/ unet/ vae_decoder/   each: openvino_model.xml, openvino_model.bin, config.json

Inputs are bound by *role*, not by name alone: exports differ (optimum-intel has been seen to emit
a UNet whose ``timestep`` input lost its name, e.g. ``57``, or is int64 rather than float32).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from .errors import DeviceError, ModelError, UsageError

COMPONENTS = ("text_encoder", "unet", "vae_decoder")
PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelError(f"model folder is incomplete: {path} is missing")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read {path}: {error}") from None
    if not isinstance(content, dict):
        raise ModelError(f"cannot read {path}: expected a JSON object")
    return content


@dataclass(frozen=True)
class ModelFolder:
    """A checked LCM folder and the configuration numbers the pipeline needs from it."""

    root: Path
    unet_config: dict[str, Any]
    vae_config: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path) -> ModelFolder:
        root = Path(root)
        if not root.is_dir():
            raise ModelError(f"model folder not found: {root}")
        for component in COMPONENTS:
            for name in ("openvino_model.xml", "openvino_model.bin"):
                if not (root / component / name).is_file():
                    raise ModelError(
                        f"model folder is incomplete: {root / component / name} is missing"
                    )
        if not (root / "scheduler" / "scheduler_config.json").is_file():
            raise ModelError(
                f"model folder is incomplete: {root}/scheduler/scheduler_config.json is missing"
            )
        unet_config = _read_json(root / "unet" / "config.json")
        if not unet_config.get("time_cond_proj_dim"):
            raise ModelError(
                f"{root} is not a latent consistency model: its UNet has no time_cond_proj_dim "
                "(a plain Stable Diffusion UNet cannot run LCM sampling)"
            )
        return cls(root, unet_config, _read_json(root / "vae_decoder" / "config.json"))

    def xml(self, component: str) -> Path:
        return self.root / component / "openvino_model.xml"

    @property
    def time_cond_proj_dim(self) -> int:
        return int(self.unet_config["time_cond_proj_dim"])

    @property
    def latent_channels(self) -> int:
        return int(self.unet_config.get("in_channels", 4))

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell: 2 ** (number of VAE blocks - 1), as diffusers computes it."""
        return 2 ** (len(self.vae_config.get("block_out_channels", [0] * 4)) - 1)

    @property
    def scaling_factor(self) -> float:
        """The VAE latent scale; the decoder sees ``denoised / scaling_factor``."""
        return float(self.vae_config.get("scaling_factor", 0.18215))

    @property
    def default_size(self) -> int:
        """The native resolution, ``unet.sample_size * vae_scale_factor`` (512 for SD 1.5)."""
        return int(self.unet_config.get("sample_size", 64)) * self.vae_scale_factor


@dataclass(frozen=True)
class UNetPorts:
    """Indices of the UNet inputs by role."""

    sample: int
    timestep: int
    encoder_hidden_states: int
    timestep_cond: int


def bind_unet_inputs(model: ov.Model) -> UNetPorts:
    """Find each UNet input by its name, else by its rank: sample 4-D, encoder_hidden_states 3-D,
    timestep_cond 2-D, timestep 0-D or 1-D (the one optimum-intel sometimes leaves unnamed)."""
    by_role: dict[str, int] = {}
    unnamed: list[int] = []
    for index, port in enumerate(model.inputs):
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
    missing = [role for role in UNetPorts.__dataclass_fields__ if role not in by_role]
    if missing:
        raise ModelError(
            f"the UNet has no {', '.join(missing)} input: not a latent consistency model export"
        )
    return UNetPorts(**by_role)


def _timestep_shape(port: ov.Output) -> tuple[int, ...]:
    """A scalar input stays a scalar; a 1-D input takes one timestep that the graph broadcasts."""
    return () if port.get_partial_shape().rank.get_length() == 0 else (1,)


class Compiler:
    """Reads, reshapes to static shapes and compiles IRs with one OpenVINO Core and one config."""

    def __init__(
        self, device: str = "CPU", precision: str | None = None, cache_dir: Path | None = None
    ) -> None:
        self.core = ov.Core()
        self.device = device
        self.config: dict[str, str] = {}
        if precision is not None:
            if precision not in PRECISIONS:
                raise UsageError(
                    f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
                )
            self.config["INFERENCE_PRECISION_HINT"] = PRECISIONS[precision]
        if cache_dir is not None:
            self.config["CACHE_DIR"] = str(cache_dir)
        known = [d.split(".")[0] for d in self.core.available_devices]
        if device.split(":")[0] not in (*known, "AUTO", "MULTI", "HETERO"):
            raise DeviceError(
                f"device {device!r} is not available; OpenVINO sees: {', '.join(known) or 'none'}"
            )

    def read(self, xml: Path) -> ov.Model:
        try:
            return self.core.read_model(xml)
        except RuntimeError as error:
            raise ModelError(f"cannot read {xml}: {_first_line(error)}") from None

    def compile(
        self, model: ov.Model, shapes: dict[int, tuple[object, ...]], name: str
    ) -> ov.CompiledModel:
        """Fix each listed input's shape (static shapes run faster) and compile for the device."""
        try:
            model.reshape({model.inputs[i]: ov.PartialShape(list(s)) for i, s in shapes.items()})
        except RuntimeError as error:
            raise ModelError(
                f"the {name} does not accept these shapes: {_first_line(error)}"
            ) from None
        try:
            return self.core.compile_model(model, self.device, self.config)
        except RuntimeError as error:
            raise DeviceError(
                f"compiling the {name} for {self.device} failed: {_first_line(error)}"
            ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


class TextEncoder:
    """CLIP text encoder: input_ids (batch, 77) int -> last_hidden_state (batch, 77, hidden)."""

    def __init__(
        self, compiler: Compiler, folder: ModelFolder, batch: int, max_length: int
    ) -> None:
        model = compiler.read(folder.xml("text_encoder"))
        self.input_type = model.inputs[0].get_element_type().to_dtype()
        self.request = compiler.compile(
            model, {0: (batch, max_length)}, "text encoder"
        ).create_infer_request()

    def __call__(self, input_ids: np.ndarray) -> np.ndarray:
        self.request.infer({0: input_ids.astype(self.input_type, copy=False)}, share_inputs=True)
        return self.request.get_output_tensor(0).data.copy()


class UNet:
    """The LCM UNet: (sample, timestep, encoder_hidden_states, timestep_cond) -> model_output."""

    def __init__(
        self,
        compiler: Compiler,
        folder: ModelFolder,
        latent_shape: tuple[int, ...],
        text_length: int,
    ) -> None:
        model = compiler.read(folder.xml("unet"))
        self.ports = bind_unet_inputs(model)
        hidden_size = model.inputs[self.ports.encoder_hidden_states].get_partial_shape()[2]
        timestep_port = model.inputs[self.ports.timestep]
        self.timestep_type = timestep_port.get_element_type().to_dtype()
        self.timestep_shape = _timestep_shape(timestep_port)
        shapes = {
            self.ports.sample: latent_shape,
            self.ports.timestep: self.timestep_shape,
            self.ports.encoder_hidden_states: (latent_shape[0], text_length, hidden_size),
            self.ports.timestep_cond: (latent_shape[0], folder.time_cond_proj_dim),
        }
        self.request = compiler.compile(model, shapes, "UNet").create_infer_request()

    def __call__(
        self,
        sample: np.ndarray,
        timestep: int,
        encoder_hidden_states: np.ndarray,
        timestep_cond: np.ndarray,
    ) -> np.ndarray:
        """One UNet evaluation; the returned array is a view valid until the next call."""
        self.request.infer(
            {
                self.ports.sample: sample,
                self.ports.timestep: np.full(self.timestep_shape, timestep, self.timestep_type),
                self.ports.encoder_hidden_states: encoder_hidden_states,
                self.ports.timestep_cond: timestep_cond,
            },
            share_inputs=True,
        )
        return self.request.get_output_tensor(0).data


class VAEDecoder:
    """VAE decoder: latents (batch, 4, h, w) -> image (batch, 3, h*8, w*8) in [-1, 1]."""

    def __init__(
        self, compiler: Compiler, folder: ModelFolder, latent_shape: tuple[int, ...]
    ) -> None:
        model = compiler.read(folder.xml("vae_decoder"))
        self.request = compiler.compile(
            model, {0: latent_shape}, "VAE decoder"
        ).create_infer_request()

    def __call__(self, latents: np.ndarray) -> np.ndarray:
        self.request.infer({0: latents}, share_inputs=True)
        return self.request.get_output_tensor(0).data


def default_cache_dir() -> Path:
    """The per-user folder for OpenVINO's compiled-model cache: ``$LCM_LITE_CACHE``, else
    ``$XDG_CACHE_HOME/lcm-lite``, else ``~/.cache/lcm-lite``."""
    if os.environ.get("LCM_LITE_CACHE"):
        return Path(os.environ["LCM_LITE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lcm-lite"


def describe(root: Path, cache_dir: Path | None) -> str:
    """What ``lcm-lite info`` prints: the folder, each network's inputs, the devices, the cache."""
    folder = ModelFolder.open(root)
    core = ov.Core()
    lines = [
        f"model: {folder.root}",
        f"native size: {folder.default_size}x{folder.default_size}, "
        f"guidance embedding dim: {folder.time_cond_proj_dim}",
    ]
    for component in COMPONENTS:
        try:
            model = core.read_model(folder.xml(component))
        except RuntimeError as error:
            raise ModelError(f"cannot read {folder.xml(component)}: {_first_line(error)}") from None
        size_mb = folder.xml(component).with_suffix(".bin").stat().st_size / 2**20
        lines.append(f"{component}: {size_mb:.1f} MB")
        for port in model.inputs:
            lines.append(
                f"  input {port.any_name}: {port.get_element_type().get_type_name()} "
                f"{port.get_partial_shape()}"
            )
    lines.append(f"devices: {', '.join(core.available_devices)}")
    if cache_dir is None:
        lines.append("compiled-model cache: off")
    else:
        cached = (
            sum(f.stat().st_size for f in cache_dir.rglob("*") if f.is_file())
            if cache_dir.is_dir()
            else 0
        )
        lines.append(f"compiled-model cache: {cache_dir} ({cached / 2**20:.1f} MB)")
    return "\n".join(lines)
