"""Write a model folder all at once: build it in a hidden sibling, then rename it into place.

An export that fails or is interrupted (Ctrl-C) removes its sibling, so the destination never
holds half a model; a replaced folder is moved aside first and deleted only after the rename.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lcm_lite.errors import UsageError


def check_destination(out_dir: Path, *, force: bool) -> None:
    """Refuse a destination that is a file, or a non-empty folder unless ``force``."""
    if out_dir.is_dir():
        if not force and any(out_dir.iterdir()):
            raise UsageError(f"{out_dir} exists and is not empty (use --force to replace it)")
    elif out_dir.exists():
        raise UsageError(f"{out_dir} exists and is not a folder")


@contextmanager
def staged_directory(out_dir: Path, *, force: bool) -> Iterator[Path]:
    """Yield an empty sibling folder of ``out_dir``; on success it becomes ``out_dir``.

    On any exception, KeyboardInterrupt included, the sibling is deleted and ``out_dir`` is left
    as it was.
    """
    check_destination(out_dir, force=force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = _hidden_sibling(out_dir, ".partial")
    try:
        staging.mkdir()  # inside the try: a signal right after it still removes it
        yield staging
        _replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(staging: Path, out_dir: Path) -> None:
    """Rename ``staging`` to ``out_dir``, moving an existing ``out_dir`` aside and deleting it."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    aside = _hidden_sibling(out_dir, ".old")
    os.replace(out_dir, aside)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(aside, out_dir)
        raise
    shutil.rmtree(aside)


def _hidden_sibling(out_dir: Path, suffix: str) -> Path:
    """A fresh name ``.NAME.<random><suffix>`` beside ``out_dir``, on the same filesystem; the
    caller makes the folder (with the process umask, unlike ``tempfile.mkdtemp``'s 0700, as
    ``out_dir`` would be) or renames into it."""
    return out_dir.parent / f".{out_dir.name}.{secrets.token_hex(4)}{suffix}"
