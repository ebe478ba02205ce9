"""What a call gives back: each step's ``StepInfo`` (for callbacks and previews), and the
``GenerationResult`` with the ``Settings`` that remake its images and the PNG metadata."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from lcm_lite.errors import UsageError
from lcm_lite.fields import as_text, metadata_of
from lcm_lite.request import LoadOptions, Request


@dataclass(frozen=True)
class StepInfo:
    """What a step callback sees after each LCM step; return ``False`` from it to cancel."""

    step: int
    num_steps: int
    timestep: int
    latents: np.ndarray
    denoised: np.ndarray
    decoder: Callable[[np.ndarray], list[Image.Image]] | None = field(
        default=None, repr=False, compare=False
    )

    def preview(self) -> list[Image.Image]:
        """This step's ``denoised`` latents decoded by the tiny VAE, one image per image of the
        call. Decoded when called, so a callback that does not ask costs nothing; callable from
        another thread. Raises UsageError when the pipeline has no tiny VAE."""
        if self.decoder is None:
            raise UsageError(
                "previews need a tiny VAE: load one with LCMPipeline.from_pretrained(..., "
                "tiny_vae=FOLDER or HUB_ID) (command line: --tiny-vae)"
            )
        return self.decoder(self.denoised)


StepCallback = Callable[[StepInfo], "bool | None"]


@dataclass(frozen=True)
class Settings:
    """What one call ran: the ``request`` with everything resolved (seed, size, steps taken,
    negative prompts, original_inference_steps), the ``timesteps`` sampled, and the LoRA adapters,
    tiny VAE and ControlNets (with the scales they steered with) in use. With them, its images
    can be made again."""

    request: Request
    timesteps: tuple[int, ...]
    loras: tuple[tuple[str, float], ...] = ()
    tiny_vae: str | None = None  # with vae="tiny": the tiny VAE's folder, unless the model's own
    controlnets: tuple[tuple[str, float], ...] = ()
    picture_digests: tuple[tuple[str, str], ...] = ()  # ("mask_sha256", hex digits), ...

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    @property
    def prompts(self) -> list[str]:
        return self.request.prompts


class GenerationResult(list[Image.Image]):
    """The images of one call, in diffusers' batch order (each prompt's images together), with
    the seed that makes them again, the settings, where the time went (seconds), and the control
    pictures the ControlNets saw (after ``control_preprocess``, before resizing)."""

    def __init__(
        self,
        images: list[Image.Image],
        seed: int,
        timings: dict[str, float],
        dropped_tokens: list[int],
        settings: Settings,
        control_images: list[Image.Image] | None = None,
    ) -> None:
        super().__init__(images)
        self.control_images = control_images or []
        self.seed = seed
        self.timings = timings
        self.dropped_tokens = dropped_tokens
        self.settings = settings

    @property
    def images(self) -> list[Image.Image]:
        return list(self)

    def metadata(self, index: int, model: str) -> dict[str, object]:
        """How image ``index`` was made, as lcm-lite stores it in PNG text chunks: the request's
        recorded fields (``fields.metadata_of``), the timesteps that ran, which image of the
        call it is, the SHA-256 (prefix) of each picture file (``image_sha256``, ``mask_sha256``),
        and the model, LoRAs and tiny VAE (``LoadOptions``)."""
        settings = self.settings
        num_images = settings.request.num_images
        loading = LoadOptions(
            model=model,
            tiny_vae=settings.tiny_vae,
            loras=settings.loras or None,
            controlnet=settings.controlnets or None,
        )
        return {
            **metadata_of(settings.request, index // num_images),
            "timesteps": as_text("integers", settings.timesteps),
            "index": index % num_images,
            **dict(settings.picture_digests),
            **metadata_of(loading, 0),
        }
