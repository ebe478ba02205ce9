"""Classifier-free guidance (Ho & Salimans 2022) for a plain Stable Diffusion UNet with LCM-LoRA.

An LCM UNet takes the guidance scale as an embedding (``guidance``); a Stable Diffusion UNet made
few-step by an LCM-LoRA does not, and diffusers' ``StableDiffusionPipeline`` (with
``LCMScheduler``) guides it the classic way, only when ``guidance_scale > 1``: the UNet sees the
batch ``[negative prompts; prompts]`` with the latents twice, and

    eps = eps_uncond + guidance_scale * (eps_text - eps_uncond)

The negative prompt defaults to the empty prompt, as diffusers' ``encode_prompt``.
"""

from __future__ import annotations

import numpy as np

from lcm_lite.errors import UsageError


def is_guided(guidance_scale: float, has_guidance_embedding: bool) -> bool:
    """diffusers' ``do_classifier_free_guidance``: scale > 1 and no guidance embedding."""
    return guidance_scale > 1 and not has_guidance_embedding


def negative_prompts(negative_prompt: str | list[str] | None, num_prompts: int) -> list[str]:
    """One negative prompt per prompt: the empty prompt by default, a string for all."""
    if negative_prompt is None:
        return [""] * num_prompts
    if isinstance(negative_prompt, str):
        return [negative_prompt] * num_prompts
    if not isinstance(negative_prompt, (list, tuple)) or not all(
        isinstance(p, str) for p in negative_prompt
    ):
        raise UsageError(
            f"negative_prompt must be a string or a list of strings, got {negative_prompt!r:.40}"
        )
    if len(negative_prompt) != num_prompts:
        raise UsageError(
            f"give one negative prompt per prompt: {len(negative_prompt)} for {num_prompts}"
        )
    return list(negative_prompt)


def guided_noise(model_output: np.ndarray, guidance_scale: float) -> np.ndarray:
    """``eps_uncond + s * (eps_text - eps_uncond)`` from the UNet's output on the doubled batch,
    in float32 as torch computes it."""
    uncond, text = np.split(model_output, 2)
    return uncond + np.float32(guidance_scale) * (text - uncond)
