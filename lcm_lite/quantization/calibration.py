"""Calibration inputs for the UNet, as the OpenVINO LCM notebook records them: generate from a
set of prompts and keep the UNet's inputs of every step (each step of each prompt is a sample).
Here the generator is lcm-lite's own pipeline, so no torch or diffusers is needed; a plain Stable
Diffusion folder with a fused LCM-LoRA samples at guidance 1.0 (diffusers' LCM-LoRA recipe, no
classifier-free guidance), an LCM at lcm-lite's default guidance."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from lcm_lite.models.controlnet import ControlNet
from lcm_lite.pipeline import LCMPipeline
from lcm_lite.pipeline.compiled import CompiledNetworks, StageProgress
from lcm_lite.request import Request

CALIBRATION_PROMPTS = (
    "a beautiful pink unicorn, 8k",
    "portrait photo of an old fisherman, dramatic light, 85mm",
    "a cozy cabin in a snowy pine forest at dusk, oil painting",
    "a futuristic city skyline at night, neon, rain",
    "a bowl of ramen on a wooden table, food photography",
    "a watercolor of a fox in a field of wildflowers",
    "an astronaut riding a horse on mars, digital art",
    "a macro photo of a dew drop on a green leaf",
    "a medieval castle on a cliff above a stormy sea",
    "a red sports car on a mountain road, motion blur",
    "a still life of apples and a jug, chiaroscuro",
    "an anime girl with silver hair under cherry blossoms",
    "a lighthouse at sunrise, long exposure, calm water",
    "a golden retriever puppy in autumn leaves",
    "an isometric cutaway of a tiny robot workshop, 3d render",
    "a desert oasis with palm trees under a starry sky",
)

UNetInputs = dict[object, np.ndarray]  # one UNet evaluation's inputs, by the IR's input index


class _RecordingNetworks(CompiledNetworks):
    """``CompiledNetworks`` whose UNet hands a copy of each evaluation's inputs to ``record``."""

    def __init__(self, *args: Any, record: Callable[[UNetInputs], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record = record

    def unet(self, controlnets: Sequence[ControlNet] = ()) -> Callable[..., np.ndarray]:
        unet = super().unet(controlnets)

        def recorded(*inputs: Any) -> np.ndarray:
            self.record({i: np.array(a, copy=True) for i, a in unet.inputs(*inputs).items()})
            return unet(*inputs)

        return recorded


def record_unet_inputs(
    model: Path,
    *,
    size: int,
    steps: int,
    samples: int,
    progress: StageProgress | None = None,
) -> list[UNetInputs]:
    """``samples`` UNet evaluations' inputs while lcm-lite generates ``size``² images of
    ``steps`` steps from ``CALIBRATION_PROMPTS`` in turn (prompt ``i`` with seed ``i``)."""
    recorded: list[UNetInputs] = []
    stage = f"record {samples} UNet calls at {size}px"

    def record(inputs: UNetInputs) -> None:
        recorded.append(inputs)
        if progress is not None:
            progress(stage, min(len(recorded), samples), samples)

    pipe = LCMPipeline.from_pretrained(model)
    pipe.networks_class = partial(_RecordingNetworks, record=record)
    guidance = {} if pipe.folder.time_cond_proj_dim is not None else {"guidance_scale": 1.0}
    if progress is not None:
        progress(stage, 0, samples)
    for index in range(math.ceil(samples / steps)):
        prompt = CALIBRATION_PROMPTS[index % len(CALIBRATION_PROMPTS)]
        request = Request(prompt, steps=steps, width=size, height=size, seed=index, **guidance)
        pipe.generate(request)
    return recorded[:samples]
