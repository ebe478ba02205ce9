"""One OpenVINO Core and config: read IRs (checked), fix their shapes, compile, cache the result."""

from __future__ import annotations

import hashlib
import json
import mmap
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov

from .blob_cache import mark_used, write_blob
from .errors import DeviceError, ModelError, UsageError

PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}


class Compiler:
    """Reads, reshapes to static shapes and compiles IRs with one OpenVINO Core and one config.

    With a ``cache_dir``, each compiled network is exported there once (``export_model``) and
    later imported from a memory-mapped file (``import_model``), so a warm start never reads the
    IR: peak memory is the blob plus the device's weights, not the IR, the blob and the weights
    (OpenVINO's own ``CACHE_DIR`` still reads and holds the IR to compute its cache key). Each
    write first prunes the cache (``blob_cache.prune_cache``): an old model's blobs go.
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
            write_blob(compiled, blob)
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
        mark_used(blob)
        return ov.CompiledModel(compiled, weights=data)


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
