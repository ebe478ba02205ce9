"""One OpenVINO Core and config: read IRs (checked), fix their shapes, compile, cache the result;
a device per stage (``StageCompilers``): one ``Compiler`` per device, sharing the Core."""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import openvino as ov

from lcm_lite.errors import DeviceError, ModelError, UsageError
from lcm_lite.fields import STAGES, Devices
from lcm_lite.runtime.blob_cache import (
    cache_size_limit,
    map_blob,
    mark_used,
    prune_temporaries,
    write_blob,
)

ISA_CAP = "ONEDNN_MAX_CPU_ISA"  # oneDNN's documented cap on the CPU instruction sets it uses
PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}


class Compiler:
    """Reads, reshapes to static shapes and compiles IRs with one OpenVINO Core and one config.

    With a ``cache_dir``, each compiled network is exported there once (``export_model``) and
    later imported from a memory-mapped file (``import_model``), so a warm start never reads the
    IR: peak memory is the blob plus the device's weights, not the IR, the blob and the weights
    (OpenVINO's own ``CACHE_DIR`` still reads and holds the IR to compute its cache key). Killed
    writes' temporaries are deleted at start; the cache is pruned before each write
    (``blob_cache``: bounded, least recently used blobs first, never one in use).

    ``core``: an OpenVINO Core to share (``StageCompilers``: one for all devices); ``stages``: the
    stages of a device map this compiler serves, named when its device is not available.
    """

    def __init__(
        self,
        device: str = "CPU",
        precision: str | None = None,
        cache_dir: Path | None = None,
        *,
        core: ov.Core | None = None,
        stages: Sequence[str] = (),
    ) -> None:
        self.core = ov.Core() if core is None else core
        self.device = device
        self.cache_dir = cache_dir
        self.cache_limit = 0 if cache_dir is None else cache_size_limit()
        if cache_dir is not None and cache_dir.is_dir():
            prune_temporaries(cache_dir)  # what killed runs left
        self.config: dict[str, str] = {}
        if precision is not None:
            if precision not in PRECISIONS:
                raise UsageError(
                    f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
                )
            self.config["INFERENCE_PRECISION_HINT"] = PRECISIONS[precision]
        missing = unavailable_devices(device, self.core.available_devices)
        if missing:
            where = [] if missing == [device] else [f"in {device!r}"]
            where += [f"for {', '.join(stages)}"] if stages else []
            place = f" ({', '.join(where)})" if where else ""
            raise DeviceError(
                f"device {missing[0]!r}{place} is not available; OpenVINO sees: "
                f"{describe_devices(self.core)}"
            )

    def read(self, xml: Path) -> ov.Model:
        _check_ir_version(xml)
        try:
            return self.core.read_model(xml)
        except RuntimeError as error:
            raise ModelError(
                f"cannot read {xml}: {openvino_message(error)} (the IR is corrupt or incomplete: "
                "download or convert the model again)"
            ) from None

    def compile(
        self,
        xml: Path,
        shapes: Callable[[ov.Model], dict[int, tuple[object, ...]]],
        request: tuple[object, ...],
        name: str,
        transform: Callable[[ov.Model], None] | None = None,
    ) -> ov.CompiledModel:
        """Compile ``xml`` with each input ``shapes(model)`` lists fixed to that shape (static
        shapes run faster), after ``transform(model)`` edited the graph (LoRA adapters).
        ``request`` is what ``shapes`` and ``transform`` depend on besides the IR: with the IR's
        identity, the device and the config it names the blob in the cache."""
        blob = self._blob_path(xml, request)
        if blob is not None and blob.is_file():
            compiled = self._import(blob)
            if compiled is not None:
                return compiled
        model = self.read(xml)
        if transform is not None:
            transform(model)
        try:
            model.reshape(
                {model.inputs[i]: ov.PartialShape(list(s)) for i, s in shapes(model).items()}
            )
        except RuntimeError as error:
            raise ModelError(
                f"the {name} does not accept these shapes: {openvino_message(error)}"
            ) from None
        try:
            compiled = self.core.compile_model(model, self.device, self.config)
        except RuntimeError as error:
            raise DeviceError(
                f"compiling the {name} for {self.device} failed: {openvino_message(error)}"
            ) from None
        del model  # the IR's weights are no longer needed once compiled
        if blob is not None:
            write_blob(compiled, blob, self.cache_limit)
        return compiled

    def _blob_path(self, xml: Path, request: tuple[object, ...]) -> Path | None:
        """``cache_dir/<component>-<digest>.blob``; the digest changes with the IR files, the
        request, the device, the config, the OpenVINO version and a cap on the instruction sets
        oneDNN may use (``ONEDNN_MAX_CPU_ISA``: a blob compiled for AMX is not one for a capped
        run)."""
        if self.cache_dir is None:
            return None
        ir_files = [xml, xml.with_suffix(".bin")]
        identity = [str(xml.resolve()), ov.get_version(), self.device, sorted(self.config.items())]
        identity.append(os.environ.get(ISA_CAP, ""))
        identity += [(f.stat().st_size, f.stat().st_mtime_ns) for f in ir_files]
        identity.append(repr(request))
        digest = hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()[:24]
        return self.cache_dir / f"{xml.parent.name}-{digest}.blob"

    def _import(self, blob: Path) -> ov.CompiledModel | None:
        """The compiled network in ``blob``, read through a copy-on-write memory map (no copy in
        memory); ``None`` if it cannot be imported (then it is compiled and written again).

        The imported network runs on some of the mapped constants in place, so the map lives as
        long as the returned model (and with it the lock that marks the blob in use); its pages
        leave memory while it is imported (the import copies most weights: without this, the
        peak RSS of a one-shot run is the whole blob plus those copies) and come back on use.
        """
        mapping = map_blob(blob)
        if mapping is None:
            return None
        try:
            data = np.frombuffer(mapping, dtype=np.uint8)
            with _releasing_pages(mapping):
                compiled = self.core.import_model(
                    ov.Tensor(data, shared_memory=True), self.device, self.config
                )
        except (OSError, ValueError, RuntimeError):
            return None
        mark_used(blob)
        return ov.CompiledModel(compiled, weights=data)


class StageCompilers:
    """A device per stage (``fields.Devices``): one ``Compiler`` per distinct device, all on one
    OpenVINO Core, each with the same ``precision`` hint (given to each device as its
    ``INFERENCE_PRECISION_HINT``) and ``cache_dir``; a compiled network's blob is named by its
    device among the rest (``Compiler._blob_path``), so each device keeps its own. Every device
    is checked when the map is made: an absent one is a DeviceError naming its stages and the
    devices OpenVINO sees (``open``)."""

    def __init__(self, devices: Devices, compilers: Mapping[str, Compiler]) -> None:
        """``compilers``: one per device of ``devices``, by device name."""
        self.devices = devices
        self.compilers = dict(compilers)
        first = self.compilers[devices.distinct[0]]
        self.core = first.core
        self.cache_dir = first.cache_dir

    @classmethod
    def open(
        cls,
        devices: str | Mapping[str, str] | Devices = "CPU",
        precision: str | None = None,
        cache_dir: Path | None = None,
    ) -> StageCompilers:
        """A compiler for each device ``devices`` names (``Devices.of``), in stage order."""
        devices = Devices.of(devices)
        core = ov.Core()
        on_device: dict[str, list[str]] = {}
        for stage, device in devices.as_dict().items():
            on_device.setdefault(device, []).append(stage)
        uniform = len(on_device) == 1  # one device: its errors name no stage, as before maps
        return cls(
            devices,
            {
                device: Compiler(
                    device, precision, cache_dir, core=core, stages=() if uniform else stages
                )
                for device, stages in on_device.items()
            },
        )

    @classmethod
    def sharing(cls, compiler: Compiler) -> StageCompilers:
        """Every stage on ``compiler`` (an ``LCMPipeline`` made with a single ``Compiler``)."""
        return cls(Devices.of(compiler.device), {compiler.device: compiler})

    @property
    def device(self) -> str:
        """The map's text form (``Devices.text``): ``CPU`` when every stage runs there."""
        return self.devices.text

    def for_stage(self, stage: str) -> Compiler:
        """The compiler of ``stage``'s device (``STAGES``: a tiny VAE's networks are the
        ``vae_decoder`` and ``vae_encoder`` stages)."""
        if stage not in STAGES:
            raise ValueError(f"no stage {stage!r}; the stages are {', '.join(STAGES)}")
        return self.compilers[self.devices.of_stage(stage)]


def _release_pages(mapping: mmap.mmap) -> None:
    """Let the imported blob's pages leave memory now (``MADV_DONTNEED``; they come back from the
    file on use). Only where the platform has it: Windows has no ``madvise``, and its pages go
    when the system needs them."""
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is not None and hasattr(mapping, "madvise"):
        with contextlib.suppress(OSError):
            mapping.madvise(advice)


@contextlib.contextmanager
def _releasing_pages(mapping: mmap.mmap, every: float = 0.05) -> Iterator[None]:
    """Release ``mapping``'s pages every ``every`` seconds while the block runs (OpenVINO's
    import releases the GIL), and once more at its end."""
    done = threading.Event()

    def release() -> None:
        while not done.wait(every):
            _release_pages(mapping)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        _release_pages(mapping)


VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def unavailable_devices(device: str, available: list[str]) -> list[str]:
    """The devices named in ``device`` that OpenVINO does not list in ``available`` (its
    ``available_devices``: ``CPU``, ``GPU.0``, ``GPU.1``, ...). Accepted as OpenVINO accepts
    them: a listed name (``GPU.1``); a family name where one of its members is listed (``GPU``
    is ``GPU.0``); a virtual device alone (``AUTO``) or over listed ones (``AUTO:GPU,CPU``,
    ``HETERO:GPU.1,CPU``, ``BATCH:GPU(4)``, ``AUTO:-CPU`` excluding one)."""
    names = [name.lstrip("-") for name in listed_devices(device)]
    families = {name.split(".")[0] for name in available}
    return [n for n in names if n and n not in available and n not in families]


def listed_devices(device: str) -> list[str]:
    """The devices ``device`` names: itself, or those a virtual device lists (``AUTO:GPU,CPU``:
    GPU, CPU; ``BATCH:GPU(4)``: GPU; ``AUTO:-CPU``: -CPU, an exclusion); none for a virtual
    device alone (``AUTO``)."""
    family, _, candidates = device.partition(":")
    if family not in VIRTUAL_DEVICES:
        return [device]
    names = (re.sub(r"\(.*\)$", "", name.strip()) for name in candidates.split(","))
    return [name for name in names if name]


def describe_devices(core: ov.Core) -> str:
    """The devices OpenVINO lists, each with its ``FULL_DEVICE_NAME``: ``CPU (Intel(R) Core(TM)
    Ultra 7 155H), GPU.0 (Intel(R) Arc(TM) Graphics (iGPU))``."""
    described = []
    for name in core.available_devices:
        try:
            described.append(f"{name} ({core.get_property(name, 'FULL_DEVICE_NAME')})")
        except RuntimeError:
            described.append(name)
    return ", ".join(described) or "none"


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


def openvino_message(error: BaseException) -> str:
    """The message of an OpenVINO error: its last line, after the "Exception from src/..." ones."""
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__
