"""What a call gives back: each step's ``StepInfo`` (for callbacks and previews), and the
``GenerationResult`` with the ``Settings`` that remake its images and the PNG metadata."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from lcm_lite.errors import UsageError


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
    """What one call ran: with the seed, everything needed to make its images again. ``steps``
    and ``timesteps`` are those sampled; ``custom_timesteps`` the schedule a caller gave instead
    of ``steps`` (image to image samples its last ``int(len * strength)``, as diffusers)."""

    prompts: list[str]
    steps: int
    guidance_scale: float
    width: int
    height: int
    num_images: int
    timesteps: tuple[int, ...]
    original_inference_steps: int
    image: str | None = None  # the starting picture's file name ("" if it had none)
    strength: float | None = None
    custom_timesteps: tuple[int, ...] | None = None
    vae: str = "full"
    negative_prompts: list[str] | None = None
    loras: str = ""
    tiny_vae: str | None = None  # with vae="tiny": the tiny VAE's folder, unless the model's own


class GenerationResult(list[Image.Image]):
    """The images of one call, in diffusers' batch order (each prompt's images together), with
    the seed that makes them again, the settings, and where the time went (seconds)."""

    def __init__(
        self,
        images: list[Image.Image],
        seed: int,
        timings: dict[str, float],
        dropped_tokens: list[int],
        settings: Settings,
    ) -> None:
        super().__init__(images)
        self.seed = seed
        self.timings = timings
        self.dropped_tokens = dropped_tokens
        self.settings = settings

    @property
    def images(self) -> list[Image.Image]:
        return list(self)

    def metadata(self, index: int, model: str) -> dict[str, object]:
        """How image ``index`` was made, as lcm-lite stores it in PNG text chunks (with the
        starting picture's file name and the strength for image-to-image)."""
        picture = {"image": self.settings.image, "strength": self.settings.strength}
        custom = self.settings.custom_timesteps
        prompt_index = index // self.settings.num_images
        return {
            "prompt": self.settings.prompts[prompt_index],
            "seed": self.seed,
            "steps": self.settings.steps,
            "guidance": self.settings.guidance_scale,
            "width": self.settings.width,
            "height": self.settings.height,
            "num_images": self.settings.num_images,
            "timesteps": ",".join(map(str, self.settings.timesteps)),
            "original_inference_steps": self.settings.original_inference_steps,
            "index": index % self.settings.num_images,
            "model": model,
            "vae": self.settings.vae,
            **(picture if self.settings.image is not None else {}),
            **({"custom_timesteps": ",".join(map(str, custom))} if custom is not None else {}),
            **(
                {"negative_prompt": self.settings.negative_prompts[prompt_index]}
                if self.settings.negative_prompts
                else {}
            ),
            **({"loras": self.settings.loras} if self.settings.loras else {}),
            **({"tiny_vae": self.settings.tiny_vae} if self.settings.tiny_vae else {}),
        }
