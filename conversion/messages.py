"""What reaches stderr: one-line messages from other libraries' exceptions, and their silence."""

from __future__ import annotations

from importlib import metadata

import diffusers
import huggingface_hub
import transformers

TRACED_WITH = ("torch", "diffusers", "transformers")


def first_line(error: BaseException) -> str:
    """The first line of ``str(error)``, or the exception's type name when the text is empty."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def versions_note() -> str:
    """The installed versions of the libraries an export traces with, and the ranges of the
    ``[convert]`` extra (the tested set), for the message of a failed export."""
    installed = ", ".join(f"{name} {_version(name)}" for name in TRACED_WITH)
    try:
        requirements = metadata.requires("lcm-lite") or []
    except metadata.PackageNotFoundError:
        requirements = []
    tested = [
        r.split(";")[0].strip()
        for r in requirements
        if 'extra == "convert"' in r and r.split(";")[0].strip().startswith(TRACED_WITH)
    ]
    ranges = f"; lcm-lite-convert is tested with {', '.join(tested)}" if tested else ""
    return f"(installed: {installed}{ranges})"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def silence_libraries() -> None:
    """Keep the libraries' warnings and progress bars off stderr, so only our lines remain."""
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.logging.set_verbosity_error()
    huggingface_hub.utils.disable_progress_bars()
