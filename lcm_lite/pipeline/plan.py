"""From a ``Request`` to what the loop runs: the request checked and resolved against the model
(size, seed, schedule, negative prompts), with the pictures decoded, before anything is compiled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from lcm_lite.errors import UsageError
from lcm_lite.images.mask import MaskCrop, blur, check_aspect_ratio, load_masks, mask_pixels
from lcm_lite.images.outpaint import extend, margins_of, outpaint_mask
from lcm_lite.images.preprocess import (
    check_before_decoding,
    check_headers,
    check_picture_count,
    load_images,
    output_size,
)
from lcm_lite.models.folder import ModelFolder
from lcm_lite.pipeline.control import ControlNetChoice, conditioning_scales, control_pictures
from lcm_lite.prompting.attention import parse_attention
from lcm_lite.request import DEFAULT_SIZE, MAX_SIZE, Request
from lcm_lite.sampling import classifier_free
from lcm_lite.sampling.inpainting import cut_by_strength
from lcm_lite.sampling.scheduler import LCMScheduler
from lcm_lite.sampling.torch_rng import random_seed

log = logging.getLogger("lcm_lite")


@dataclass(frozen=True)
class Plan:
    """A resolved request: ``request`` with every field the images depend on made concrete
    (``prompt`` a list, ``negative_prompt`` the list classifier-free guidance uses or None,
    ``steps`` the count sampled, ``controlnet_conditioning_scale`` one per ControlNet), the
    ``schedule``, the latents' shape, the decoded pictures (starting ones, and each ControlNet's
    control pictures) and, inpainting, the binary ``mask`` (1 or one per picture, 1, height,
    width)."""

    request: Request
    schedule: np.ndarray
    latent_shape: tuple[int, int, int, int]
    pictures: list[Image.Image] | None
    control_pictures: list[list[Image.Image]] | None = None
    mask: np.ndarray | None = None
    crop: MaskCrop | None = None  # padding_mask_crop: the image is pasted back into the picture

    @property
    def guided(self) -> bool:
        """Classifier-free guidance: the UNet sees ``[negative prompts; prompts]``."""
        return self.request.negative_prompt is not None


def plan(
    request: Request,
    folder: ModelFolder,
    scheduler: LCMScheduler,
    max_side: int = MAX_SIZE,
    controlnets: Sequence[ControlNetChoice] = (),
) -> Plan:
    """Check ``request`` (``Request.check``, then what needs the model: a negative prompt for an
    LCM, the picture count, the latents' shape) and resolve it. Image to image: the picture,
    resized to width x height (default: its own size rounded down to a multiple of 8, at most
    ``max_side``; a picture that would make a larger image is refused from its header, before it
    is decoded), and ``steps`` from the last ``int(original_inference_steps * strength)``
    distillation timesteps, as diffusers. With ``controlnets``, their control pictures (whose
    first sets the size when neither width and height nor a starting picture do, as diffusers'
    ``prepare_image``; with ``padding_mask_crop`` cut to the mask's box as the picture) and their
    scales. Inpainting (a mask, or outpainting): the pictures and
    masks of ``_inpainting_inputs`` (with ``padding_mask_crop`` the size is the request's or
    512 x 512, not the picture's), the mask checked not to be empty, and the last
    ``int(steps * strength)`` of the schedule, as diffusers' inpainting."""
    request.check()
    check_negative_prompt(request.negative_prompt, folder)
    check_negative_prompt(request.negative_prompt_embeds, folder)
    if folder.is_inpainting and request.mask_image is None and request.outpaint is None:
        raise UsageError(
            f"{folder.root.name} is an inpainting model (its UNet takes {folder.unet_channels} "
            "channels: latents, mask, masked picture): give a picture and a mask (image= and "
            "mask_image=; --image and --mask)"
        )
    pictures = masks = crop = None
    width, height = request.width, request.height
    if request.mask_image is not None and request.padding_mask_crop is not None:
        # made for the mask's box: not at the picture's size
        width, height = width or DEFAULT_SIZE, height or DEFAULT_SIZE
    if request.image is not None:
        check_before_decoding(request.image, width, height, folder.vae_scale_factor, max_side)
        pictures = load_images(request.image)
        if request.mask_image is not None or request.outpaint is not None:
            pictures, masks, crop = _inpainting_inputs(request, pictures, width, height)
        width, height = output_size(pictures[0], width, height, folder.vae_scale_factor, max_side)
    multiple = folder.vae_scale_factor
    controls = control_pictures(request, len(controlnets), multiple, max_side)
    if controls is not None and pictures is None:
        width, height = output_size(controls[0][0], width, height, multiple, max_side)
    if controls is not None and crop is not None:  # cut as the picture (diffusers' crops_coords)
        controls = [[crop.fit(picture, width, height) for picture in loaded] for loaded in controls]
    width = DEFAULT_SIZE if width is None else int(width)
    height = DEFAULT_SIZE if height is None else int(height)
    schedule = scheduler.timesteps(
        None if request.timesteps is not None else request.steps,
        original_inference_steps=request.original_inference_steps,
        timesteps=request.timesteps,
        strength=1.0 if pictures is None or masks is not None else request.strength,
    )
    prompts = _prompts(request)
    steps = len(schedule)
    if masks is not None:
        schedule = cut_by_strength(schedule, request.strength)
    resolved = replace(
        request,
        prompt=prompts,
        negative_prompt=_negative_prompts(request, len(prompts), folder),
        steps=steps,
        guidance_scale=float(request.guidance_scale),
        width=width,
        height=height,
        num_images=int(request.num_images),
        seed=random_seed() if request.seed is None else int(request.seed),
        original_inference_steps=int(
            request.original_inference_steps or scheduler.config.original_inference_steps
        ),
        timesteps=None if request.timesteps is None else tuple(map(int, request.timesteps)),
        strength=request.strength if pictures is None else float(request.strength),
        controlnet_conditioning_scale=None
        if controls is None
        else conditioning_scales(request.controlnet_conditioning_scale, controlnets),
    )
    resolved.check()  # the size taken from a picture, too
    check_prompt_options(request, folder)
    latent_shape = (
        len(prompts) * resolved.num_images,
        folder.latent_channels,
        height // folder.vae_scale_factor,
        width // folder.vae_scale_factor,
    )
    if request.latents is not None and request.latents.shape != latent_shape:
        raise UsageError(f"latents must have shape {latent_shape}, got {request.latents.shape}")
    if pictures is not None and (request.latents is None or masks is not None):
        check_picture_count(len(pictures), latent_shape[0])
    mask = None if masks is None else mask_pixels(masks, width, height)
    return Plan(
        resolved, schedule, latent_shape, pictures, control_pictures=controls, mask=mask, crop=crop
    )


def _prompts(request: Request) -> list[str]:
    """The prompts; with ``prompt_embeds``, one empty prompt per row (as diffusers, the
    embeddings stand for the prompts, which are then not given)."""
    embeds, negative_embeds = request.prompt_embeds, request.negative_prompt_embeds
    if embeds is None:
        if negative_embeds is not None:
            raise UsageError("negative_prompt_embeds needs prompt_embeds")
        return request.prompts
    if request.prompts != [""]:
        raise UsageError("give either a prompt or prompt_embeds (then the prompt is ''), not both")
    for name, array in (("prompt_embeds", embeds), ("negative_prompt_embeds", negative_embeds)):
        if array is not None and (
            not isinstance(array, np.ndarray) or array.ndim != 3 or array.dtype.kind != "f"
        ):
            raise UsageError(f"{name} must be a float array (batch, tokens, hidden)")
    if negative_embeds is not None and negative_embeds.shape != embeds.shape:
        raise UsageError(
            f"negative_prompt_embeds must have prompt_embeds' shape {embeds.shape}, "
            f"got {negative_embeds.shape}"
        )
    if negative_embeds is not None and request.negative_prompt is not None:
        raise UsageError("give either a negative prompt or negative_prompt_embeds, not both")
    return [""] * len(embeds)


def check_prompt_options(request: Request, folder: ModelFolder) -> None:
    """A UsageError for a ``clip_skip`` past the text encoder's layers (diffusers' indexes
    ``hidden_states``: the embeddings and each layer's output) and, with ``prompt_weighting``, a
    weight that is not a number."""
    layers = folder.text_encoder_layers()
    if request.clip_skip is not None and request.clip_skip > layers:
        raise UsageError(
            f"clip_skip must be from 0 to {layers} (this text encoder's layers), "
            f"got {request.clip_skip}"
        )
    if request.prompt_weighting:
        negative = request.negative_prompt
        negatives = [negative] if isinstance(negative, str) else list(negative or [])
        for prompt in [*request.prompts, *negatives]:
            parse_attention(prompt)


def _inpainting_inputs(
    request: Request, pictures: list[Image.Image], width: int | None, height: int | None
) -> tuple[list[Image.Image], list[Image.Image], MaskCrop | None]:
    """The pictures and masks to inpaint: the masks read and checked against the pictures'
    shape; outpainting, both on the extended canvas (``images.outpaint``); blurred if asked;
    with ``padding_mask_crop``, cut to the mask's box (``images.mask.MaskCrop``)."""
    masks = None
    if request.mask_image is not None:
        check_headers(request.mask_image)
        masks = load_masks(request.mask_image, len(pictures))
        for index, picture in enumerate(pictures):
            check_aspect_ratio(masks[index % len(masks)], picture)
    if request.outpaint is not None:
        margins = margins_of(request.outpaint)
        masks = [
            outpaint_mask(picture, margins, None if masks is None else masks[index % len(masks)])
            for index, picture in enumerate(pictures)
        ]
        pictures = [extend(picture, margins) for picture in pictures]
    given = request.mask_image is not None  # mask_blur and padding_mask_crop need a mask
    if given and request.mask_blur:
        masks = [blur(mask, request.mask_blur) for mask in masks]
    crop = None
    if given and request.padding_mask_crop is not None:
        crop = MaskCrop.of(pictures, masks, width, height, request.padding_mask_crop)
        picture, mask = crop.cropped(width, height)
        pictures, masks = [picture], [mask]
    return pictures, masks, crop


def takes_negative_prompts(folder: ModelFolder) -> bool:
    """A plain Stable Diffusion UNet (with LCM-LoRA) takes a negative prompt; a latent
    consistency model does not: its guidance is distilled into the UNet (``time_cond_proj_dim``),
    and diffusers' LCM pipeline has no negative prompt."""
    return folder.time_cond_proj_dim is None


def check_negative_prompt(negative_prompt: object, folder: ModelFolder) -> None:
    """A UsageError when ``negative_prompt`` is given to a model that takes none."""
    if negative_prompt is not None and not takes_negative_prompts(folder):
        raise UsageError(
            "a latent consistency model takes no negative prompt: its guidance is "
            "distilled into the UNet (negative prompts work with LCM-LoRA models)"
        )


def _negative_prompts(request: Request, num_prompts: int, folder: ModelFolder) -> list[str] | None:
    """The negative prompts classifier-free guidance uses; None when it is off (diffusers'
    ``do_classifier_free_guidance``: guidance_scale > 1 and no guidance embedding)."""
    if not takes_negative_prompts(folder):
        return None
    if not classifier_free.is_guided(request.guidance_scale, has_guidance_embedding=False):
        if request.negative_prompt is not None:
            log.warning("the negative prompt is not used at guidance_scale <= 1 (as diffusers)")
        return None
    return classifier_free.negative_prompts(request.negative_prompt, num_prompts)
