"""What reaches stderr: one-line messages from other libraries' exceptions, and their silence."""

from __future__ import annotations

import diffusers
import huggingface_hub
import transformers


def first_line(error: BaseException) -> str:
    """The first line of ``str(error)``, or the exception's type name when the text is empty."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def silence_libraries() -> None:
    """Keep the libraries' warnings and progress bars off stderr, so only our lines remain."""
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.logging.set_verbosity_error()
    huggingface_hub.utils.disable_progress_bars()
