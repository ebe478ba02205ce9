"""Where a model (or a tiny VAE) comes from: a local folder, or a Hugging Face hub repository of
OpenVINO IR.

Only the files text to image reads are fetched (no vae_encoder, safety_checker or
feature_extractor); the VAE encoder comes on the first image-to-image call.
``HF_HOME``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` are huggingface_hub's own
variables and work as they do there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path

from lcm_lite.errors import ModelError, UsageError

DEFAULT_MODEL = "OpenVINO/LCM_Dreamshaper_v7-int8-ov"
RUNTIME_FILES = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*.json",
    "tokenizer/merges.txt",
    "text_encoder/*",
    "unet/*",
    "vae_decoder/*",
]
VAE_ENCODER_FILES = ["vae_encoder/*"]
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def resolve_model(
    model: str | os.PathLike[str] | None,
    revision: str | None = None,
    *,
    files: list[str] = RUNTIME_FILES,
) -> Path:
    """The local folder for ``model``: itself if it is a folder, else a hub snapshot with
    ``files`` (downloaded unless cached; from the cache alone when ``HF_HUB_OFFLINE=1``)."""
    return resolve(
        model or DEFAULT_MODEL,
        revision,
        what="model",
        files=files,
        option="--model",
        alternative="convert a diffusers model with `lcm-lite-convert SOURCE FOLDER`",
    )


def resolve(
    name: str | os.PathLike[str],
    revision: str | None,
    *,
    what: str,
    files: list[str],
    option: str,
    alternative: str,
) -> Path:
    """The local folder ``name`` (a ``what``: "model", "tiny VAE") is, or the hub snapshot of its
    ``files``. A ``Path``, or a string that can only be a path (see ``looks_like_a_path``), is a
    folder and never goes to the hub. The error for a hub id that is neither cached nor
    reachable names the ``option`` that takes a copied folder, and the ``alternative`` way to
    make one."""
    path = Path(name).expanduser()
    if path.is_dir():
        if revision is not None:
            raise UsageError(
                f"--revision {revision} applies to hub models only; {name} is a local folder"
            )
        return path
    if looks_like_a_path(name) or not _REPO_ID.match(str(name)):
        raise ModelError(f"{what} folder not found: {name}")
    return _snapshot(str(name), revision, files, f"then pass {option} FOLDER; or {alternative}")


def looks_like_a_path(name: str | os.PathLike[str]) -> bool:
    """A ``Path``, or a string that starts with ``./``, ``../``, ``/`` or ``~`` or holds the
    OS's own separator where that is not ``/`` (a hub id is ``owner/name``)."""
    if not isinstance(name, str):
        return True
    separators = {os.sep, os.altsep} - {None, "/"}
    return name.startswith((".", "/", "~")) or any(sep in name for sep in separators)


def _snapshot(repo_id: str, revision: str | None, files: list[str], instead: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=files, local_files_only=offline
            )
        )
    except LocalEntryNotFoundError:
        raise ModelError(
            f"{repo_id} is not in the local Hugging Face cache and the hub cannot be reached"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: download it on a connected machine"
            f" (`hf download {repo_id}`) and copy the folder here, {instead}"
        ) from None
    except HfHubHTTPError as error:
        raise ModelError(f"cannot download {repo_id}: {str(error).splitlines()[0]}") from None
    except Exception as error:
        reason = _network_failure(error)
        if reason is None:
            raise
        raise ModelError(f"cannot download {repo_id}: {reason}") from None


def _network_failure(error: Exception) -> str | None:
    """What went wrong in a download, as a sentence, for the failures a user can act on: a full
    disk, a proxy that refuses, a connection lost or refused, a file error; ``None`` for anything
    else (a bug)."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return (
            "no space left on the disk of the Hugging Face cache: free some space, or set HF_HOME"
            " (or HF_HUB_CACHE) to a folder on a larger disk, and run again"
        )
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    proxy_errors, connection_errors = _transport_errors()
    if isinstance(error, proxy_errors):
        return (
            f"the proxy refused the connection ({detail}): check HTTPS_PROXY / HTTP_PROXY "
            "(and NO_PROXY), or the proxy's credentials"
        )
    if isinstance(error, (*connection_errors, ConnectionError, TimeoutError)):
        return f"the connection to the hub was lost ({detail}); run again to resume the download"
    if isinstance(error, OSError):  # e.g. the cache folder is not writable
        return f"{detail} (the Hugging Face cache is in $HF_HOME, ~/.cache/huggingface by default)"
    return None


def _transport_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """The proxy errors, then those of a connection lost, refused or timed out, of the HTTP
    libraries that huggingface_hub downloads with (httpx2 today's, httpx or requests older ones),
    those installed; imported once a download has failed, never by ``import lcm_lite``."""
    proxy: list[type[Exception]] = []
    connection: list[type[Exception]] = []
    with contextlib.suppress(ImportError):
        import httpx2

        proxy.append(httpx2.ProxyError)
        connection += [httpx2.NetworkError, httpx2.TimeoutException, httpx2.RemoteProtocolError]
    with contextlib.suppress(ImportError):
        import httpx

        proxy.append(httpx.ProxyError)
        connection += [httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError]
    with contextlib.suppress(ImportError):
        from requests import exceptions as requests_errors

        proxy.append(requests_errors.ProxyError)
        connection += [
            requests_errors.ConnectionError,
            requests_errors.Timeout,
            requests_errors.ChunkedEncodingError,
            requests_errors.ContentDecodingError,
        ]
    return tuple(proxy), tuple(connection)
