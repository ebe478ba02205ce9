"""ControlNet steering, as diffusers' ``StableDiffusionControlNetPipeline`` (and its img2img twin,
and ``MultiControlNetModel`` for several) runs it around the UNet:

- the control pictures: RGB, resized to width x height (Lanczos), in [0, 1], not normalized
  (``prepare_image``; with ``padding_mask_crop``, first cut to the mask's box); one picture
  serves the whole batch, one per prompt serves that prompt's images; doubled under
  classifier-free guidance (unless ``guess_mode``);
- at step ``i`` of ``n``, ControlNet ``k`` steers with ``scale_k * keep``, ``keep`` 0 when
  ``i / n < control_guidance_start`` or ``(i + 1) / n > control_guidance_end`` (diffusers'
  ``controlnet_keep``), else 1; its residuals are multiplied by it (``conditioning_scale``) and
  the ControlNets' residuals added up, then given to the UNet. A ControlNet at scale 0 adds zero
  residuals, so it is not run at all;
- ``guess_mode`` under classifier-free guidance runs the ControlNets on the conditional half of
  the batch and gives the unconditional half zero residuals; the residuals are scaled from 0.1
  (shallowest) to 1 (mid block), ``logspace(-1, 0, count)`` times the scale;
- inpainting (``StableDiffusionControlNetInpaintPipeline``), the ControlNets take the latents
  alone, a 9-channel UNet the latents, the mask and the masked pictures' latents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lcm_lite.errors import UsageError
from lcm_lite.images.annotators import annotate
from lcm_lite.images.preprocess import Picture, check_before_decoding, load_images, preprocess
from lcm_lite.models.controlnet import ControlNet, ControlNetFolder
from lcm_lite.models.folder import ModelFolder
from lcm_lite.models.networks import UNet
from lcm_lite.request import Request

Denoiser = Callable[[np.ndarray, int, np.ndarray, "np.ndarray | None"], np.ndarray]
ControlNetSpec = str | Path | tuple[str | Path, float]


@dataclass(frozen=True)
class ControlNetChoice:
    """A ControlNet loaded with the pipeline, and its conditioning scale when a call gives none."""

    folder: ControlNetFolder
    scale: float


def open_controlnets(
    value: ControlNetSpec | Sequence[ControlNetSpec] | None, model: ModelFolder
) -> list[ControlNetChoice]:
    """The ControlNets ``value`` names (a folder or hub id, a ``(source, scale)`` pair, or a list
    of either), each checked against ``model``'s UNet."""
    if value is None:
        return []
    items = [value] if isinstance(value, (str, Path)) or _is_pair(value) else list(value)
    choices = []
    for item in items:
        source, scale = item if _is_pair(item) else (item, 1.0)
        if not isinstance(source, (str, Path)):
            raise UsageError(f"a ControlNet is a folder or hub id, got {source!r:.60}")
        folder = ControlNetFolder.open(source)
        folder.check_base(model)
        choices.append(ControlNetChoice(folder, float(scale)))
    return choices


def _is_pair(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[1], (int, float))
        and not isinstance(value[1], bool)
    )


def control_pictures(
    request: Request, count: int, multiple: int, max_side: int
) -> list[list[Image.Image]] | None:
    """The control pictures of each of ``count`` ControlNets, checked from their headers, then
    decoded (and made from photos by ``control_preprocess``): ``control_image`` is one picture (or
    a list, one per prompt) for one ControlNet, a list with one such entry per ControlNet for
    several (diffusers' convention)."""
    per_controlnet = check_control_count(request, count)
    if per_controlnet is None:
        return None
    pictures = []
    for item in per_controlnet:
        check_before_decoding(item, request.width, request.height, multiple, max_side)
        pictures.append(
            made_from_photos(item, request.control_preprocess, request.canny_thresholds)
        )
    for loaded in pictures:
        if len(loaded) not in (1, len(request.prompts)):
            raise UsageError(
                f"{len(loaded)} control pictures for {len(request.prompts)} prompts: give one, "
                "or one per prompt"
            )
    return pictures


def made_from_photos(
    pictures: Picture | Sequence[Picture], kind: str | None, thresholds: Sequence[float] | None
) -> list[Image.Image]:
    """``pictures`` (one or a list) decoded and made into control pictures by the annotator
    ``kind`` (``control_preprocess``; None: as they are) with Canny's ``thresholds``."""
    loaded = load_images(pictures)
    return loaded if kind is None else [annotate(picture, kind, thresholds) for picture in loaded]


def check_control_count(request: Request, count: int) -> list[object] | None:
    """``control_image`` split per ControlNet (of ``count``), nothing decoded: a UsageError
    when pictures and ControlNets do not go together. None when the request has no control
    picture: the ControlNets loaded are not run (a server's ControlNets are optional per
    request)."""
    given = request.control_image
    if given is None:
        return None
    if not count:
        raise UsageError(
            "control_image needs a ControlNet: LCMPipeline.from_pretrained(..., controlnet=DIR) "
            "(command line: --controlnet DIR)"
        )
    if count > 1 and (not isinstance(given, (list, tuple)) or len(given) != count):
        got = len(given) if isinstance(given, (list, tuple)) else 1
        raise UsageError(f"{got} control pictures for {count} ControlNets: give one for each")
    return [given] if count == 1 else list(given)


def conditioning_scales(
    scale: float | Sequence[float] | None, choices: Sequence[ControlNetChoice]
) -> tuple[float, ...]:
    """One scale per ControlNet: those given (one number serves them all, as diffusers), else
    each ControlNet's own."""
    if scale is None:
        return tuple(choice.scale for choice in choices)
    scales = [scale] * len(choices) if isinstance(scale, (int, float)) else list(scale)
    if len(scales) != len(choices):
        raise UsageError(
            f"{len(scales)} conditioning scales for {len(choices)} ControlNets: give one, or one "
            "for each"
        )
    return tuple(float(s) for s in scales)


class Control:
    """One call's ControlNets around the UNet: ``steered(unet, step)`` is the UNet of that step
    (the same call), with the ControlNets' residuals added."""

    def __init__(
        self,
        controlnets: Sequence[ControlNet],
        conditions: Sequence[np.ndarray],
        step_scales: Sequence[Sequence[float]],
        guess_mode: bool,
    ) -> None:
        self.controlnets = list(controlnets)
        self.conditions = list(conditions)
        self.step_scales = [list(scales) for scales in step_scales]
        self.guess_mode = guess_mode

    @classmethod
    def none(cls) -> Control:
        """No ControlNet: ``steered`` is the UNet itself."""
        return cls([], [], [], False)

    @classmethod
    def prepare(
        cls,
        request: Request,
        pictures: Sequence[Sequence[Image.Image]],
        controlnets: Sequence[ControlNet],
        num_steps: int,
        guided: bool,
    ) -> Control:
        """diffusers' ``prepare_image`` of each ControlNet's pictures for a batch of
        ``len(prompts) * num_images``, and each step's scales (``controlnet_keep``)."""
        guess_mode = bool(request.guess_mode) and guided
        conditions = []
        for loaded in pictures:
            pixels = preprocess(list(loaded), request.width, request.height, normalize=False)
            repeats = len(request.prompts) * request.num_images if len(loaded) == 1 else None
            pixels = np.repeat(pixels, repeats or request.num_images, axis=0)
            if guided and not guess_mode:
                pixels = np.concatenate([pixels, pixels])
            conditions.append(pixels)
        start, end = request.control_guidance_start, request.control_guidance_end
        step_scales = [
            [
                0.0 if i / num_steps < start or (i + 1) / num_steps > end else scale
                for scale in request.controlnet_conditioning_scale
            ]
            for i in range(num_steps)
        ]
        return cls(controlnets, conditions, step_scales, guess_mode)

    def steered(
        self, unet: UNet, step: int, unet_input: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> Denoiser:
        """The UNet at ``step``: ``(latents, timestep, encoder_hidden_states, timestep_cond) ->
        model_output``, the ControlNets run on the same inputs and their scaled residuals summed
        into it (zeros where none steers). ``unet_input``: what the UNet takes of the latents
        (an inpainting UNet: with the mask and the masked pictures' latents); the ControlNets
        take the latents alone, as diffusers' ``StableDiffusionControlNetInpaintPipeline``."""
        extend = unet_input or (lambda latents: latents)
        if not self.controlnets:
            return lambda latents, *conditions: unet(extend(latents), *conditions)

        def denoise(
            latents: np.ndarray,
            timestep: int,
            encoder_hidden_states: np.ndarray,
            timestep_cond: np.ndarray | None,
        ) -> np.ndarray:
            residuals = self._residuals(step, latents, timestep, encoder_hidden_states)
            if residuals is None:
                residuals = [np.zeros(port.get_shape(), np.float32) for port in unet.residual_ports]
            return unet(extend(latents), timestep, encoder_hidden_states, timestep_cond, residuals)

        return denoise

    def _residuals(
        self, step: int, sample: np.ndarray, timestep: int, encoder_hidden_states: np.ndarray
    ) -> list[np.ndarray] | None:
        """The sum of each steering ControlNet's residuals times its scale at ``step``; None
        when none steers."""
        if self.guess_mode:  # the conditional half: [negative prompts; prompts]
            half = sample.shape[0] // 2
            sample, encoder_hidden_states = sample[half:], encoder_hidden_states[half:]
        total: list[np.ndarray] | None = None
        for controlnet, condition, scale in zip(
            self.controlnets, self.conditions, self.step_scales[step], strict=True
        ):
            if scale == 0.0:
                continue
            outputs = controlnet(sample, timestep, encoder_hidden_states, condition)
            scales = self._residual_scales(scale, len(outputs))
            scaled = [output * s for output, s in zip(outputs, scales, strict=True)]
            total = scaled if total is None else [a + b for a, b in zip(total, scaled, strict=True)]
        if total is not None and self.guess_mode:
            total = [np.concatenate([np.zeros_like(r), r]) for r in total]
        return total

    def _residual_scales(self, scale: float, count: int) -> list[np.float32]:
        """Each residual's factor: ``scale``, or in guess mode ``logspace(-1, 0, count) * scale``
        (float32, as torch computes it)."""
        if not self.guess_mode:
            return [np.float32(scale)] * count
        return list(np.logspace(-1, 0, count, dtype=np.float32) * np.float32(scale))
