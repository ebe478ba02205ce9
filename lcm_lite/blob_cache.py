"""The compiled-model cache: one blob per network, shape and device, in a per-user folder.

``Compiler`` writes a blob after compiling (``write_blob``) and imports it on later starts;
``prune_cache`` removes what a model that was updated, moved or removed left behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import openvino as ov

UNUSED_BLOB_SECONDS = 30 * 24 * 3600  # a cached network not imported for 30 days is deleted
STALE_TEMPORARY_SECONDS = 3600  # a blob being written for an hour was left by a killed process


def default_cache_dir() -> Path:
    """The per-user folder for OpenVINO's compiled-model cache: ``$LCM_LITE_CACHE``, else
    ``$XDG_CACHE_HOME/lcm-lite``, else ``~/.cache/lcm-lite``."""
    if os.environ.get("LCM_LITE_CACHE"):
        return Path(os.environ["LCM_LITE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lcm-lite"


def mark_used(blob: Path) -> None:
    """Set the blob's access time to now (``noatime`` mounts never do), keeping its mtime:
    ``prune_cache`` reads the access time as the last use."""
    with contextlib.suppress(OSError):
        os.utime(blob, ns=(time.time_ns(), blob.stat().st_mtime_ns))


def prune_cache(cache_dir: Path) -> None:
    """Delete the blobs not used for ``UNUSED_BLOB_SECONDS`` (a model that was updated, moved
    or removed leaves its blobs behind: 1-2 GB each) and the temporaries of writes killed
    more than ``STALE_TEMPORARY_SECONDS`` ago."""
    now = time.time()
    for path in cache_dir.glob("*.blob*"):
        with contextlib.suppress(OSError):
            info = path.stat()
            if path.name.startswith("."):  # write_blob's temporary: .<name>.blob.<random>
                stale = now - info.st_mtime > STALE_TEMPORARY_SECONDS
            else:
                last_use = max(info.st_atime, info.st_mtime)
                stale = path.suffix == ".blob" and now - last_use > UNUSED_BLOB_SECONDS
            if stale:
                path.unlink()


def write_blob(compiled: ov.CompiledModel, blob: Path) -> None:
    """Write ``compiled`` to ``blob`` atomically, after pruning the cache to make room; a cache
    that cannot be written is skipped."""
    try:
        blob.parent.mkdir(parents=True, exist_ok=True)
        prune_cache(blob.parent)
        fd, temporary = tempfile.mkstemp(prefix=f".{blob.name}.", dir=blob.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(compiled.export_model().getbuffer())
        os.replace(temporary, blob)
    except (OSError, RuntimeError):
        with contextlib.suppress(OSError):
            os.unlink(temporary)
