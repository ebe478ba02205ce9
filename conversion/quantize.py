"""``--quantize-unet``: 8-bit post-training quantization of the UNet with NNCF.

As the OpenVINO LCM notebook does it: record the UNet's inputs while diffusers'
``LatentConsistencyModelPipeline`` generates from a set of calibration prompts (every step of
every prompt is one sample), then ``nncf.quantize`` the OpenVINO UNet on those samples with the
transformer preset and bias correction off. Weights and activations of the matrix products and
convolutions become int8; what quantization costs in accuracy is measured by the benchmark.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from diffusers import LatentConsistencyModelPipeline

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
    folder: Path, *, size: int, steps: int = 4, guidance_scale: float = 8.0
) -> list[dict[str, np.ndarray]]:
    """The UNet inputs of every step while diffusers generates ``CALIBRATION_PROMPTS``, keyed by
    the names of the exported UNet's inputs."""
    pipe = LatentConsistencyModelPipeline.from_pretrained(
        folder, safety_checker=None, dtype=torch.float32
    )
    pipe.set_progress_bar_config(disable=True)
    samples: list[dict[str, np.ndarray]] = []

    def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample, timestep = args[:2]
        samples.append(
            {
                "sample": sample.numpy().copy(),
                "timestep": np.atleast_1d(timestep.numpy()).astype(np.int64),
                "encoder_hidden_states": kwargs["encoder_hidden_states"].numpy().copy(),
                "timestep_cond": kwargs["timestep_cond"].numpy().copy(),
            }
        )

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
