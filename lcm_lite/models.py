"""The model folder and its three OpenVINO networks: find, check, reshape, compile, run.

The folder is the ecosystem's layout (what optimum-intel and ``lcm-lite-convert`` write and
``openvino_genai.Text2ImagePipeline`` reads)::

    model_index.json  scheduler/scheduler_config.json  tokenizer/
    text_encoder/ unet/ vae_decoder/   each: openvino_model.xml, openvino_model.bin, config.json

Inputs are bound by *role*, not by name alone: exports differ (optimum-intel has been seen to emit
a UNet whose ``timestep`` input lost its name, e.g. ``57``, or is int64 rather than float32).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from .configs import read_json_object
from .errors import DeviceError, ModelError, UsageError

COMPONENTS = ("text_encoder", "unet", "vae_decoder")
PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}
UNUSED_BLOB_SECONDS = 30 * 24 * 3600  # a cached network not imported for 30 days is deleted
STALE_TEMPORARY_SECONDS = 3600  # a blob being written for an hour was left by a killed process


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
        unet_config = read_json_object(root / "unet" / "config.json")
        if not unet_config.get("time_cond_proj_dim"):
            raise ModelError(
                f"{root} is not a latent consistency model: its UNet has no time_cond_proj_dim "
                "(a plain Stable Diffusion UNet cannot run LCM sampling)"
            )
        return cls(root, unet_config, read_json_object(root / "vae_decoder" / "config.json"))

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


def bind_unet_inputs(model: ov.Model | ov.CompiledModel) -> UNetPorts:
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


def _check_guidance_dim(port: ov.Output, folder: ModelFolder) -> None:
    """The IR's ``timestep_cond`` width must be the config's ``time_cond_proj_dim``."""
    width = port.get_partial_shape()[-1]
    if width.is_static and width.get_length() != folder.time_cond_proj_dim:
        raise ModelError(
            f"{folder.root / 'unet' / 'config.json'} does not match the UNet IR: it says "
            f"time_cond_proj_dim {folder.time_cond_proj_dim}, the IR takes {width.get_length()}"
        )


def _timestep_shape(port: ov.Output) -> tuple[int, ...]:
    """A scalar input stays a scalar; a 1-D input takes one timestep that the graph broadcasts."""
    return () if port.get_partial_shape().rank.get_length() == 0 else (1,)


class Compiler:
    """Reads, reshapes to static shapes and compiles IRs with one OpenVINO Core and one config.

    With a ``cache_dir``, each compiled network is exported there once (``export_model``) and
    later imported from a memory-mapped file (``import_model``), so a warm start never reads the
    IR: peak memory is the blob plus the device's weights, not the IR, the blob and the weights
    (OpenVINO's own ``CACHE_DIR`` still reads and holds the IR to compute its cache key). Each
    write first prunes the cache (``prune_cache``), so an updated or removed model's blobs go.
    """

    def __init__(
        self, device: str = "CPU", precision: str | None = None, cache_dir: Path | None = None
    ) -> None:
        self.core = ov.Core()
        self.device = device
        self.cache_dir = cache_dir
        self.config: dict[str, str] = {}
        if precision is not None:
            if precision not in PRECISIONS:
                raise UsageError(
                    f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
                )
            self.config["INFERENCE_PRECISION_HINT"] = PRECISIONS[precision]
        known = [d.split(".")[0] for d in self.core.available_devices]
        if device.split(":")[0] not in (*known, "AUTO", "MULTI", "HETERO"):
            raise DeviceError(
                f"device {device!r} is not available; OpenVINO sees: {', '.join(known) or 'none'}"
            )

    def read(self, xml: Path) -> ov.Model:
        _check_ir_version(xml)
        try:
            return self.core.read_model(xml)
        except RuntimeError as error:
            raise ModelError(
                f"cannot read {xml}: {_openvino_message(error)} (the IR is corrupt or incomplete: "
                "download or convert the model again)"
            ) from None

    def compile(
        self,
        xml: Path,
        shapes: Callable[[ov.Model], dict[int, tuple[object, ...]]],
        request: tuple[object, ...],
        name: str,
    ) -> ov.CompiledModel:
        """Compile ``xml`` with each input ``shapes(model)`` lists fixed to that shape (static
        shapes run faster). ``request`` is what ``shapes`` depends on besides the IR: with the
        IR's identity, the device and the config it names the blob in the cache."""
        blob = self._blob_path(xml, request)
        if blob is not None and blob.is_file():
            compiled = self._import(blob)
            if compiled is not None:
                return compiled
        model = self.read(xml)
        try:
            model.reshape(
                {model.inputs[i]: ov.PartialShape(list(s)) for i, s in shapes(model).items()}
            )
        except RuntimeError as error:
            raise ModelError(
                f"the {name} does not accept these shapes: {_openvino_message(error)}"
            ) from None
        try:
            compiled = self.core.compile_model(model, self.device, self.config)
        except RuntimeError as error:
            raise DeviceError(
                f"compiling the {name} for {self.device} failed: {_openvino_message(error)}"
            ) from None
        del model  # the IR's weights are no longer needed once compiled
        if blob is not None:
            _export(compiled, blob)
        return compiled

    def _blob_path(self, xml: Path, request: tuple[object, ...]) -> Path | None:
        """``cache_dir/<component>-<digest>.blob``; the digest changes with the IR files, the
        request, the device, the config and the OpenVINO version."""
        if self.cache_dir is None:
            return None
        ir_files = [xml, xml.with_suffix(".bin")]
        identity = [str(xml.resolve()), ov.get_version(), self.device, sorted(self.config.items())]
        identity += [(f.stat().st_size, f.stat().st_mtime_ns) for f in ir_files]
        identity.append(repr(request))
        digest = hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()[:24]
        return self.cache_dir / f"{xml.parent.name}-{digest}.blob"

    def _import(self, blob: Path) -> ov.CompiledModel | None:
        """The compiled network in ``blob``, read through a copy-on-write memory map (no copy in
        memory); ``None`` if it cannot be imported (then it is compiled and written again).

        The imported network runs on some of the mapped constants in place, so the map lives as
        long as the returned model; its pages leave memory once imported and come back on use.
        """
        try:
            with blob.open("rb") as file:
                mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
            data = np.frombuffer(mapping, dtype=np.uint8)
            compiled = self.core.import_model(
                ov.Tensor(data, shared_memory=True), self.device, self.config
            )
        except (OSError, ValueError, RuntimeError):
            return None
        mapping.madvise(mmap.MADV_DONTNEED)
        _mark_used(blob)
        return ov.CompiledModel(compiled, weights=data)


def _mark_used(blob: Path) -> None:
    """Set the blob's access time to now (``noatime`` mounts never do), keeping its mtime:
    ``prune_cache`` reads the access time as the last use."""
    with contextlib.suppress(OSError):
        os.utime(blob, ns=(time.time_ns(), blob.stat().st_mtime_ns))


def prune_cache(cache_dir: Path) -> None:
    """Delete the blobs not used for ``UNUSED_BLOB_SECONDS`` (a model that was updated, moved
    or removed leaves its blobs behind: 1-2 GB each) and the temporaries of writes killed
    more than ``STALE_TEMPORARY_SECONDS`` ago."""
    now = time.time()
    for path in cache_dir.glob("*.blob*"):
        with contextlib.suppress(OSError):
            info = path.stat()
            if path.name.startswith("."):  # _export's temporary: .<name>.blob.<random>
                stale = now - info.st_mtime > STALE_TEMPORARY_SECONDS
            else:
                last_use = max(info.st_atime, info.st_mtime)
                stale = path.suffix == ".blob" and now - last_use > UNUSED_BLOB_SECONDS
            if stale:
                path.unlink()


def _export(compiled: ov.CompiledModel, blob: Path) -> None:
    """Write ``compiled`` to ``blob`` atomically, after pruning the cache to make room; a cache
    that cannot be written is skipped."""
    try:
        blob.parent.mkdir(parents=True, exist_ok=True)
        prune_cache(blob.parent)
        fd, temporary = tempfile.mkstemp(prefix=f".{blob.name}.", dir=blob.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(compiled.export_model().getbuffer())
        os.replace(temporary, blob)
    except (OSError, RuntimeError):
        with contextlib.suppress(OSError):
            os.unlink(temporary)


SUPPORTED_IR_VERSIONS = ("10", "11")


def _check_ir_version(xml: Path) -> None:
    """Name an IR written for another OpenVINO generation before OpenVINO tries every frontend
    on it (and prints their noise): the ``<net version="N">`` attribute, 10 or 11 today."""
    try:
        with open(xml, "rb") as file:
            head = file.read(512).decode("utf-8", "replace")
    except OSError as error:
        raise ModelError(f"cannot read {xml}: {error.strerror}") from None
    match = re.search(r'<net\b[^>]*\bversion="([^"]*)"', head)
    if match and match.group(1) not in SUPPORTED_IR_VERSIONS:
        raise ModelError(
            f"{xml} is IR version {match.group(1)}, which OpenVINO {ov.get_version().split('-')[0]}"
            f" cannot read (it reads IR versions {', '.join(SUPPORTED_IR_VERSIONS)}): convert the"
            " model again with this OpenVINO, or install the OpenVINO that wrote it"
        )


def _openvino_message(error: BaseException) -> str:
    """The message of an OpenVINO error: its last line, after the "Exception from src/..." ones."""
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


class TextEncoder:
    """CLIP text encoder: input_ids (batch, 77) int -> last_hidden_state (batch, 77, hidden)."""

    def __init__(
        self, compiler: Compiler, folder: ModelFolder, batch: int, max_length: int
    ) -> None:
        shape = (batch, max_length)
        compiled = compiler.compile(
            folder.xml("text_encoder"), lambda model: {0: shape}, shape, "text encoder"
        )
        self.input_type = compiled.inputs[0].get_element_type().to_dtype()
        self.compiled = compiled  # the request needs it alive
        self.request = compiled.create_infer_request()

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
        def shapes(model: ov.Model) -> dict[int, tuple[object, ...]]:
            ports = bind_unet_inputs(model)
            _check_guidance_dim(model.inputs[ports.timestep_cond], folder)
            hidden_size = model.inputs[ports.encoder_hidden_states].get_partial_shape()[2]
            return {
                ports.sample: latent_shape,
                ports.timestep: _timestep_shape(model.inputs[ports.timestep]),
                ports.encoder_hidden_states: (latent_shape[0], text_length, hidden_size),
                ports.timestep_cond: (latent_shape[0], folder.time_cond_proj_dim),
            }

        request = (latent_shape, text_length, folder.time_cond_proj_dim)
        compiled = compiler.compile(folder.xml("unet"), shapes, request, "UNet")
        self.ports = bind_unet_inputs(compiled)
        timestep_port = compiled.inputs[self.ports.timestep]
        self.timestep_type = timestep_port.get_element_type().to_dtype()
        self.timestep_shape = _timestep_shape(timestep_port)
        self.compiled = compiled  # the request needs it alive
        self.request = compiled.create_infer_request()

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
        self.compiled = compiler.compile(
            folder.xml("vae_decoder"), lambda model: {0: latent_shape}, latent_shape, "VAE decoder"
        )  # the request needs it alive
        self.request = self.compiled.create_infer_request()

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
    compiler = Compiler()
    lines = [
        f"model: {folder.root}",
        f"native size: {folder.default_size}x{folder.default_size}, "
        f"guidance embedding dim: {folder.time_cond_proj_dim}",
    ]
    for component in COMPONENTS:
        model = compiler.read(folder.xml(component))
        size_mb = folder.xml(component).with_suffix(".bin").stat().st_size / 2**20
        lines.append(f"{component}: {size_mb:.1f} MB")
        for port in model.inputs:
            lines.append(
                f"  input {port.any_name}: {port.get_element_type().get_type_name()} "
                f"{port.get_partial_shape()}"
            )
    lines.append(f"devices: {', '.join(compiler.core.available_devices)}")
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
