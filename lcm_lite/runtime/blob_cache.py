"""The compiled-model cache: one blob per network, shape and device, in a per-user folder.

``Compiler`` writes a blob after compiling (``write_blob``) and imports it on later starts
(``map_blob``). The cache is bounded (``cache_size_limit``: ``$LCM_LITE_CACHE_SIZE``, default
8 GiB): before a blob is written, the least recently used blobs are deleted until it fits;
blobs unused for 30 days go in any case (a model that was updated, moved or removed).

A blob in use is never deleted, whichever process uses it: a process that imports a blob holds
a shared ``flock`` on it for as long as the network lives (the lock rides on the memory map's own
file descriptor), a writer holds an exclusive one on its temporary, and deleting takes an
exclusive lock first. So a temporary nobody holds was left by a killed process and goes at the
next start (``prune_temporaries``). Where there is no ``flock`` (Windows), a mapped or open file
cannot be deleted at all, which protects it the same way, and temporaries go after an hour.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import secrets
import time
from pathlib import Path
from typing import IO

import openvino as ov

from lcm_lite.errors import UsageError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

DEFAULT_CACHE_SIZE = 8 * 2**30
UNUSED_BLOB_SECONDS = 30 * 24 * 3600  # a cached network not imported for 30 days is deleted
STALE_TEMPORARY_SECONDS = 3600  # without flock: a blob being written for an hour was abandoned
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def default_cache_dir() -> Path:
    """The per-user folder for OpenVINO's compiled-model cache: ``$LCM_LITE_CACHE``, else
    ``$XDG_CACHE_HOME/lcm-lite``, else ``~/.cache/lcm-lite``."""
    if os.environ.get("LCM_LITE_CACHE"):
        return Path(os.environ["LCM_LITE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lcm-lite"


def cache_size_limit() -> int:
    """The cache's bound in bytes: ``$LCM_LITE_CACHE_SIZE`` (``8G``, ``500M``, ``2.5GiB``,
    bytes; units are powers of 1024), else ``DEFAULT_CACHE_SIZE``."""
    text = os.environ.get("LCM_LITE_CACHE_SIZE", "").strip()
    if not text:
        return DEFAULT_CACHE_SIZE
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", text, re.IGNORECASE)
    if match is None:
        raise UsageError(f"LCM_LITE_CACHE_SIZE must be a size such as 8G, 500M or 0, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def cache_usage(cache_dir: Path) -> int:
    """The bytes the cache's blobs take."""
    return sum(size for _, size, _ in _blobs(cache_dir))


def mark_used(blob: Path) -> None:
    """Set the blob's access time to now (``noatime`` mounts never do), keeping its mtime:
    ``prune_cache`` reads the access time as the last use."""
    with contextlib.suppress(OSError):
        os.utime(blob, ns=(time.time_ns(), blob.stat().st_mtime_ns))


def map_blob(blob: Path) -> mmap.mmap | None:
    """A copy-on-write memory map of ``blob``, holding a shared lock on it while it lives (so no
    process deletes it meanwhile); ``None`` if it is being deleted or cannot be read."""
    try:
        with blob.open("rb") as file:
            if not _lock(file, shared=True):
                return None
            return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)  # dups the locked fd
    except (OSError, ValueError):
        return None


def prune_temporaries(cache_dir: Path) -> None:
    """Delete the temporaries that killed writes left (``write_blob`` holds its own locked)."""
    now = time.time()
    for path in cache_dir.glob(".*.blob.*"):
        with contextlib.suppress(OSError):
            if fcntl is not None or now - path.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                _delete_unless_in_use(path)


def prune_cache(cache_dir: Path, limit: int, room: int = 0) -> None:
    """Delete the temporaries of killed writes, the blobs unused for ``UNUSED_BLOB_SECONDS``, and
    then the least recently used blobs until the rest and ``room`` more bytes fit in ``limit``;
    never a file in use."""
    prune_temporaries(cache_dir)
    now = time.time()
    blobs = sorted(_blobs(cache_dir))  # least recently used first
    total = sum(size for _, size, _ in blobs)
    for last_use, size, path in blobs:
        unused = now - last_use > UNUSED_BLOB_SECONDS
        if (unused or total + room > limit) and _delete_unless_in_use(path):
            total -= size


def write_blob(compiled: ov.CompiledModel, blob: Path, limit: int) -> None:
    """Write ``compiled`` to ``blob`` atomically, after pruning the cache to make room for it; a
    cache that cannot be written is skipped. An interruption (Ctrl+C, SIGTERM) deletes the
    temporary before it propagates."""
    # Named before it exists, so that an interruption at any bytecode after its creation (even
    # before the descriptor is assigned) finds it to delete.
    temporary = blob.parent / f".{blob.name}.{secrets.token_hex(4)}"
    try:
        blob.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            _lock(file, shared=False)  # at once: unlocked, it looks abandoned to other processes
            data = compiled.export_model().getbuffer()
            prune_cache(blob.parent, limit, room=data.nbytes)
            file.write(data)
            os.replace(temporary, blob)
    except BaseException as error:
        if not isinstance(error, FileExistsError):  # that name is another writer's
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        if not isinstance(error, (OSError, RuntimeError)):
            raise


def _blobs(cache_dir: Path) -> list[tuple[float, int, Path]]:
    """``(last use, size, path)`` of each blob; the last use is the later of the access time
    (``mark_used``) and the write time."""
    found = []
    for path in cache_dir.glob("*.blob"):
        with contextlib.suppress(OSError):
            info = path.stat()
            found.append((max(info.st_atime, info.st_mtime), info.st_size, path))
    return found


def _lock(file: IO[bytes], *, shared: bool) -> bool:
    """Take a non-blocking ``flock`` on ``file``; ``False`` if another holder prevents it (always
    ``True`` where there is no ``flock``)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(file.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _delete_unless_in_use(path: Path) -> bool:
    """Delete ``path`` if no process holds it (see the module's docstring); whether it went."""
    try:
        with path.open("rb") as file:
            if not _lock(file, shared=False):
                return False
            path.unlink()
    except OSError:
        return False
    return True
