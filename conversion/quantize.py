"""``--quantize-unet``: 8-bit post-training quantization of the UNet with NNCF.

As the OpenVINO LCM notebook does it: record the UNet's inputs while diffusers generates from a
set of calibration prompts (every step of every prompt is one sample), then ``nncf.quantize`` the
OpenVINO UNet on those samples with the transformer preset and bias correction off. Weights and
activations of the matrix products and convolutions become int8; what quantization costs in
accuracy is measured by the benchmark.

The samples come from the model that is exported: ``LatentConsistencyModelPipeline`` for an LCM;
for a plain Stable Diffusion source, diffusers' LCM-LoRA recipe (``StableDiffusionPipeline`` with
an ``LCMScheduler``, guidance 1.0), which needs the LCM-LoRA fused (``--lora``); LoRAs fused as the
export fuses them (``conversion.fuse_lora``).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from diffusers import LatentConsistencyModelPipeline, LCMScheduler, StableDiffusionPipeline

from conversion.fuse_lora import fuse_loras
from conversion.source import is_latent_consistency_model

CALIBRATION_PROMPTS = (
    "a beautiful pink unicorn, 8k",
    "portrait photo of an old fisherman, dramatic light, 85mm",
    "a cozy cabin in a snowy pine forest at dusk, oil painting",
    "a futuristic city skyline at night, neon, rain",
    "a bowl of ramen on a wooden table, food photography",
    "a watercolor of a fox in a field of wildflowers",
    "an astronaut riding a horse on mars, digital art",
    "a macro photo of a dew drop on a green leaf",
)


def collect_unet_inputs(
    folder: Path, *, size: int, loras: Sequence[tuple[str | Path, float]] = (), steps: int = 4
) -> list[dict[str, np.ndarray]]:
    """The UNet inputs of every step while diffusers generates ``CALIBRATION_PROMPTS`` with the
    exported model (``loras`` fused; an LCM scheduler), keyed by the exported UNet's input names."""
    if is_latent_consistency_model(folder):
        pipe = LatentConsistencyModelPipeline.from_pretrained(
            folder, safety_checker=None, dtype=torch.float32
        )
        guidance_scale = 8.0
    else:
        pipe = StableDiffusionPipeline.from_pretrained(
            folder, safety_checker=None, dtype=torch.float32
        )
        pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
        guidance_scale = 1.0
    if loras:
        fuse_loras(loras, pipe.text_encoder, pipe.unet)
    pipe.set_progress_bar_config(disable=True)
    samples: list[dict[str, np.ndarray]] = []

    def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample, timestep = args[:2]
        inputs = {
            "sample": sample.numpy().copy(),
            "timestep": np.atleast_1d(timestep.numpy()).astype(np.int64),
            "encoder_hidden_states": kwargs["encoder_hidden_states"].numpy().copy(),
        }
        if kwargs.get("timestep_cond") is not None:
            inputs["timestep_cond"] = kwargs["timestep_cond"].numpy().copy()
        samples.append(inputs)

    handle = pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            for index, prompt in enumerate(CALIBRATION_PROMPTS):
                pipe(
                    prompt,
                    num_inference_steps=steps,
                    guidance_scale=guidance_scale,
                    width=size,
                    height=size,
                    output_type="latent",
                    generator=torch.Generator().manual_seed(index),
                )
    finally:
        handle.remove()
    return samples


def quantize_unet(model: ov.Model, samples: list[dict[str, np.ndarray]]) -> ov.Model:
    """NNCF post-training quantization (int8 weights and activations) on ``samples``."""
    import nncf  # imported here: it takes seconds and only this option needs it

    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars
        return nncf.quantize(
            model,
            nncf.Dataset(samples),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(samples),
            advanced_parameters=nncf.AdvancedQuantizationParameters(disable_bias_correction=True),
        )
