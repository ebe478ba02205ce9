"""What a call may ask for, checked before anything is loaded or run: diffusers' limits (and the
inputs diffusers would silently mis-handle) as one-line ``UsageError``s, shared by the pipeline,
the command line and the server."""

from __future__ import annotations

import math
import numbers

from lcm_lite.errors import UsageError

DEFAULT_SIZE = 512
MAX_SIZE = 2048
MAX_IMAGES = 16


def check_arguments(
    prompts: list[str],
    steps: int,
    guidance_scale: float,
    width: int | None,
    height: int | None,
    num_images: int,
) -> None:
    """Reject what diffusers would reject (or silently mis-handle) with one clear sentence.
    Numbers may be any ``numbers.Integral`` / ``numbers.Real`` (NumPy's too), never a bool.
    ``width`` or ``height`` None: not given (image to image takes the picture's)."""
    if not prompts:
        raise UsageError("give at least one prompt")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise UsageError(f"prompts must be strings, got {type(prompt).__name__}")
        if "\x00" in prompt:
            raise UsageError("a prompt contains a NUL character")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: undecodable bytes from a command line
            raise UsageError("a prompt is not valid UTF-8 text") from None
    for name, value, low, high in (
        ("width", width, 8, MAX_SIZE),
        ("height", height, 8, MAX_SIZE),
        ("num_images", num_images, 1, MAX_IMAGES),
        ("steps", steps, 1, None),
    ):
        if value is None and name in ("width", "height"):
            continue
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise UsageError(f"{name} must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            raise UsageError(
                f"{name} must be from {low} to {high or 'the schedule length'}, got {value}"
            )
    for name, value in (("width", width), ("height", height)):
        if value is not None and value % 8:
            raise UsageError(f"{name} must be a multiple of 8, got {value}")
    if (
        not isinstance(guidance_scale, numbers.Real)
        or isinstance(guidance_scale, bool)
        or not math.isfinite(guidance_scale)
        or guidance_scale < 0
    ):
        raise UsageError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")


def check_strength(strength: float) -> None:
    """Image to image's ``strength``: a number in (0, 1] (diffusers accepts 0, then fails)."""
    is_number = isinstance(strength, numbers.Real) and not isinstance(strength, bool)
    if not is_number or not 0 < strength <= 1:
        raise UsageError(f"strength must be a number in (0, 1], got {strength!r}")
