"""PNG files: written atomically with lcm-lite's metadata as text chunks, and read back."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from PIL import Image, PngImagePlugin

from lcm_lite.errors import OutputError

METADATA_PREFIX = "lcm-lite:"


def save_png(image: Image.Image, path: Path, metadata: Mapping[str, object]) -> None:
    """Write ``image`` to ``path`` with ``metadata`` as PNG text chunks, atomically: the PNG goes to
    a temporary file in the same folder and is renamed into place, so an interrupted or failed write
    never leaves a partial file. An existing ``path`` is never replaced."""
    info = png_info(metadata)
    folder = path.parent
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    except OSError as error:
        raise OutputError(f"cannot write to {folder}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            image.save(file, format="PNG", pnginfo=info)
            file.flush()
            os.fsync(file.fileno())
        _publish(temporary, path)
    except OSError as error:
        if error.errno == errno.EEXIST:
            raise OutputError(f"{path} already exists; not overwriting it") from None
        raise OutputError(f"cannot write {path}: {error.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def png_info(metadata: Mapping[str, object]) -> PngImagePlugin.PngInfo:
    """``metadata`` as PNG text chunks, each key prefixed with ``lcm-lite:``."""
    info = PngImagePlugin.PngInfo()
    for key, value in metadata.items():
        info.add_text(METADATA_PREFIX + key, str(value))
    return info


def _publish(temporary: str, path: Path) -> None:
    """Give the finished file its name; a hard link fails if ``path`` exists, so nothing is
    overwritten. File systems without hard links (FAT) get a checked rename instead."""
    try:
        os.link(temporary, path)
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        if path.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
        os.replace(temporary, path)


def read_png_metadata(path: Path) -> dict[str, str]:
    """The lcm-lite text chunks of a PNG written by :func:`save_png`, without the prefix."""
    with Image.open(path) as image:
        text = getattr(image, "text", {})
    return {k[len(METADATA_PREFIX) :]: v for k, v in text.items() if k.startswith(METADATA_PREFIX)}


def unique_path(path: Path) -> Path:
    """``path`` if free, else the first free ``stem-1.png``, ``stem-2.png``, ..."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate
