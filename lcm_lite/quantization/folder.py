"""A quantized model folder: the source's files copied unchanged but for the UNet, which is
quantized on samples recorded from the source (``calibration``, ``unet``); written into a hidden
sibling and renamed into place (``models.staging``), so an interrupted run leaves nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

from lcm_lite.errors import LcmLiteError, UsageError
from lcm_lite.models.folder import ModelFolder, component_files
from lcm_lite.models.hub import resolve_model
from lcm_lite.models.staging import check_destination, staged_directory
from lcm_lite.pipeline.compiled import StageProgress
from lcm_lite.quantization import (
    DEFAULT_PRESET,
    DEFAULT_SAMPLES,
    DEFAULT_SIZE,
    DEFAULT_STEPS,
    PRESETS,
)
from lcm_lite.quantization.calibration import CALIBRATION_PROMPTS, record_unet_inputs
from lcm_lite.quantization.unet import check_quantizable, quantize_unet
from lcm_lite.request import Request


def quantize_model(
    model: str | Path,
    out_dir: Path,
    *,
    size: int = DEFAULT_SIZE,
    steps: int = DEFAULT_STEPS,
    samples: int = DEFAULT_SAMPLES,
    preset: str = DEFAULT_PRESET,
    force: bool = False,
    progress: StageProgress | None = None,
) -> Path:
    """Write ``model`` (a folder or hub id) to ``out_dir`` with its UNet quantized on
    ``samples`` UNet evaluations of ``steps``-step generations at ``size``², with NNCF's
    ``preset`` (``quantization.PRESETS``). A source that is
    not a model folder is the ModelError opening it raises (its message prefixed); a UNet that
    is already int8 and an ``out_dir`` that exists non-empty (unless ``force``) are UsageErrors.
    Returns ``out_dir``."""
    out_dir = Path(out_dir)
    if samples < 1:
        raise UsageError(f"the sample count must be at least 1, got {samples}")
    if preset not in PRESETS:
        raise UsageError(f"the preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    Request(CALIBRATION_PROMPTS[0], steps=steps, width=size, height=size).check()
    check_destination(out_dir, force=force)
    try:
        source = ModelFolder.open(resolve_model(model)).root.resolve()
    except LcmLiteError as error:
        raise type(error)(f"cannot quantize {model}: {error}") from None
    if out_dir.resolve() in (source, *source.parents):
        raise UsageError(f"{out_dir} holds the source model: choose another output folder")
    check_quantizable(component_files(source, "unet").xml)
    with staged_directory(out_dir, force=force) as staging:
        unet_files = component_files(source, "unet")
        shutil.copytree(
            source,
            staging,
            dirs_exist_ok=True,
            ignore=lambda folder, names: [
                n for n in names if Path(folder, n) in (unet_files.xml, unet_files.weights)
            ],
        )
        write_quantized_unet(
            source,
            staging,
            size=size,
            steps=steps,
            samples=samples,
            preset=preset,
            progress=progress,
        )
    return out_dir


def write_quantized_unet(
    source: Path,
    out_dir: Path,
    *,
    size: int = DEFAULT_SIZE,
    steps: int = DEFAULT_STEPS,
    samples: int = DEFAULT_SAMPLES,
    preset: str = DEFAULT_PRESET,
    progress: StageProgress | None = None,
) -> None:
    """Record the calibration samples from the model folder ``source`` and write its quantized
    UNet IR to ``out_dir/unet/`` (``out_dir`` may be ``source``: ``lcm-lite-convert
    --quantize-unet`` quantizes the folder it has just exported)."""
    recorded = record_unet_inputs(
        source, size=size, steps=steps, samples=samples, progress=progress
    )
    quantize_unet(source, out_dir, recorded, progress, preset)
