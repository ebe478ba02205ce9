"""The UNet's 8-bit post-training quantization with NNCF's OpenVINO backend, as the OpenVINO LCM
notebook and optimum-intel's hybrid mode quantize a diffusion UNet: ``nncf.quantize`` with the
transformer preset (SmoothQuant on the matrix products) and bias correction off, on the recorded
samples. The weights and activations of the convolutions and matrix products become int8; the
rest keeps the source's weight format (an fp16 IR is written fp16 again). The ``preset`` is
NNCF's: ``mixed`` (the notebook's; activations asymmetric, with zero points) or ``performance``
(activations symmetric)."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import openvino as ov

from lcm_lite.errors import UsageError
from lcm_lite.models.folder import component_files
from lcm_lite.pipeline.compiled import StageProgress
from lcm_lite.quantization import DEFAULT_PRESET
from lcm_lite.quantization.calibration import UNetInputs

INT8_TYPES = (ov.Type.u8, ov.Type.i8)


def check_quantizable(xml: Path) -> None:
    """Refuse a UNet whose weights are already int8 (NNCF weight compression, as the hub's
    ``-int8-ov`` models): NNCF cannot quantize its activations on top of it."""
    if _weight_types(ov.Core().read_model(xml)) & set(INT8_TYPES):
        raise UsageError(
            f"{xml.parent} has int8-compressed weights, which NNCF cannot quantize again: "
            "quantize the fp16 or fp32 model (lcm-lite-convert SOURCE OUT_DIR --weights fp16)"
        )


def quantize_unet(
    source: Path,
    out_dir: Path,
    samples: list[UNetInputs],
    progress: StageProgress | None = None,
    preset: str = DEFAULT_PRESET,
) -> None:
    """Quantize ``source``'s UNet IR on ``samples`` with NNCF's ``preset`` and write it to
    ``out_dir`` (which may be ``source``: written beside, then renamed over it), fp16 if the
    source's weights were."""
    import nncf  # the [quantize] extra; its OpenVINO backend needs no torch

    xml = component_files(source, "unet").xml
    model = ov.Core().read_model(xml)
    compress_to_fp16 = ov.Type.f16 in _weight_types(model)
    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's own progress bars
        quantized = nncf.quantize(
            model,
            nncf.Dataset(_Passes(samples, progress)),
            model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset(preset),
            subset_size=len(samples),
            advanced_parameters=nncf.AdvancedQuantizationParameters(disable_bias_correction=True),
        )
    del model
    files = component_files(out_dir, "unet")
    partial = files.xml.with_name(".quantized.xml")
    ov.save_model(quantized, partial, compress_to_fp16=compress_to_fp16)
    os.replace(partial.with_suffix(".bin"), files.weights)
    os.replace(partial, files.xml)


def _weight_types(model: ov.Model) -> set[ov.Type]:
    """The element types of the model's constants that hold weights (more than a few values)."""
    return {
        op.get_output_element_type(0)
        for op in model.get_ops()
        if op.get_type_name() == "Constant"
        and op.get_output_partial_shape(0).is_static
        and math.prod(op.get_output_shape(0)) > 64
    }


class _Passes:
    """The samples as NNCF iterates them, once per statistics pass, each pass a progress stage."""

    def __init__(self, samples: list[UNetInputs], progress: StageProgress | None) -> None:
        self.samples = samples
        self.progress = progress
        self.passes = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[UNetInputs]:
        self.passes += 1
        stage = f"quantize: statistics pass {self.passes}"
        for index, sample in enumerate(self.samples):
            if self.progress is not None:
                self.progress(stage, index, len(self.samples))
            yield sample
        if self.progress is not None:
            self.progress(stage, len(self.samples), len(self.samples))
