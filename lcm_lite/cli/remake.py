"""The command line that makes an image again, from the settings its PNG stores.

``REMAKE_OPTIONS`` maps each metadata key (``GenerationResult.metadata``) to the words of
the ``lcm-lite generate`` options that set it; a new setting is one more row. ``prompt`` is the
positional argument; ``index`` (which image of the call) is not an option, nor ``timesteps``
(what ran: ``steps``, ``original_inference_steps`` and ``strength`` make it again, or the
``custom_timesteps`` a caller gave).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping

Formatter = Callable[[str], list[str]]  # the stored value -> its command-line words


def _option(option: str) -> Formatter:
    """``--option VALUE``."""
    return lambda value: [option, value]


REMAKE_OPTIONS: dict[str, Formatter] = {
    "seed": _option("--seed"),
    "steps": _option("--steps"),
    "custom_timesteps": _option("--timesteps"),
    "original_inference_steps": _option("--original-inference-steps"),
    "guidance": _option("--guidance"),
    "width": _option("--width"),
    "height": _option("--height"),
    "num_images": _option("--num-images"),
    "model": _option("--model"),
    "image": _option("--image"),
    "strength": _option("--strength"),
    "vae": _option("--vae"),
    "tiny_vae": _option("--tiny-vae"),
    "negative_prompt": _option("--negative-prompt"),
    "loras": lambda value: [word for lora in value.split(", ") for word in ("--lora", lora)],
}


def remake_command(metadata: Mapping[str, str], prog: str = "lcm-lite") -> str:
    """A shell command line that generates the image of ``metadata`` again: the call it came
    from (with ``num_images`` > 1, its image number ``index`` among them)."""
    argv = [prog, "generate"]
    for key, words in REMAKE_OPTIONS.items():
        if key in metadata:
            argv += words(metadata[key])
    prompt = metadata.get("prompt", "")
    argv += ["--", prompt] if prompt.startswith("-") else [prompt]
    return shlex.join(argv)
