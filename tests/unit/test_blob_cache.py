"""The compiled-model cache stays within its bound, least recently used first, and never deletes
a blob that a process is using; interrupted writes leave nothing behind."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lcm_lite import LCMPipeline, UsageError
from lcm_lite.runtime.blob_cache import (
    DEFAULT_CACHE_SIZE,
    cache_size_limit,
    cache_usage,
    prune_cache,
)

MiB = 2**20


def _blob(folder: Path, name: str, size: int, used_seconds_ago: float) -> Path:
    path = folder / f"{name}.blob"
    path.write_bytes(b"\0" * size)
    when = time.time() - used_seconds_ago
    os.utime(path, (when, when))
    return path


def test_least_recently_used_blobs_go_first_until_the_rest_fits(tmp_path):
    oldest = _blob(tmp_path, "unet-a", 3 * MiB, 300)
    older = _blob(tmp_path, "unet-b", 3 * MiB, 200)
    recent = _blob(tmp_path, "unet-c", 3 * MiB, 100)
    newest = _blob(tmp_path, "text_encoder-d", 1 * MiB, 10)
    prune_cache(tmp_path, limit=8 * MiB)  # 10 MiB held: one 3 MiB blob must go
    assert not oldest.exists()
    assert older.exists() and recent.exists() and newest.exists()
    prune_cache(tmp_path, limit=8 * MiB, room=3 * MiB)  # and room for a 3 MiB blob to come
    assert not older.exists()
    assert recent.exists() and newest.exists()
    assert cache_usage(tmp_path) == 4 * MiB


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("", DEFAULT_CACHE_SIZE),
        ("8G", 8 * 2**30),
        ("500MiB", 500 * MiB),
        ("2.5gb", 5 * 2**29),
        ("123", 123),
        ("0", 0),
    ],
)
def test_the_bound_is_read_from_lcm_lite_cache_size(monkeypatch, text, size):
    monkeypatch.setenv("LCM_LITE_CACHE_SIZE", text)
    assert cache_size_limit() == size


def test_a_bad_bound_is_a_one_line_usage_error(tiny_ov_dir, tmp_path):
    env = {**os.environ, "LCM_LITE_CACHE": str(tmp_path), "LCM_LITE_CACHE_SIZE": "lots"}
    argv = [sys.executable, "-m", "lcm_lite", "x", "--model", str(tiny_ov_dir)]
    run = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert (
        run.stderr == "lcm-lite: error: LCM_LITE_CACHE_SIZE must be a size such as 8G, 500M "
        "or 0, got 'lots'\n"
    )


def _sizes(cache: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in cache.glob("*.blob")}


def test_generating_many_sizes_keeps_the_cache_within_its_bound(tiny_ov_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LCM_LITE_CACHE_SIZE", "6M")  # the tiny model's blobs for one size: 4.6 MiB
    pipe = LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32", cache_dir=tmp_path)
    seen = []
    for width in (64, 96, 128):
        pipe("a red cube", steps=1, width=width, height=64, seed=3)
        assert cache_usage(tmp_path) <= 6 * MiB
        seen.append(set(_sizes(tmp_path)))
    unets = [{name for name in names if name.startswith("unet-")} for names in seen]
    assert len(unets[-1]) == 1 and unets[-1] - unets[1]  # only the newest size's UNet is left
    info = subprocess.run(
        [sys.executable, "-m", "lcm_lite", "info", "--model", str(tiny_ov_dir)],
        env={**os.environ, "LCM_LITE_CACHE": str(tmp_path), "LCM_LITE_CACHE_SIZE": "6M"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    used = cache_usage(tmp_path) / MiB
    assert f"compiled-model cache: {tmp_path} ({used:.1f} MB used of 6 MB" in info.stdout


HOLD = """
import sys
from pathlib import Path
from lcm_lite import LCMPipeline
pipe = LCMPipeline.from_pretrained(sys.argv[1], precision="f32", cache_dir=Path(sys.argv[2]))
pipe("a red cube", steps=1, width=64, height=64, seed=3)
print("holding", flush=True)
sys.stdin.read()
"""


def test_a_blob_another_process_is_using_is_never_evicted(tiny_ov_dir, tmp_path, monkeypatch):
    cached = LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32", cache_dir=tmp_path)
    cached("a red cube", steps=1, width=64, height=64, seed=3)
    imported = set(_sizes(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tiny_ov_dir), str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "holding\n"  # it imported the three blobs, and runs
        monkeypatch.setenv("LCM_LITE_CACHE_SIZE", "1")  # every blob is over the bound
        pipe = LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32", cache_dir=tmp_path)
        pipe("a red cube", steps=1, width=96, height=64, seed=3)
        assert imported <= set(_sizes(tmp_path))  # in use elsewhere: kept, over the bound
        assert len(_sizes(tmp_path)) == len(imported) + 1  # of the new ones, the last written
        del pipe  # it imported the text encoder's blob (the same for every size) and holds it
    finally:
        holder.communicate("", timeout=60)
    prune_cache(tmp_path, limit=1)  # as the next write does
    assert not imported & set(_sizes(tmp_path))  # no longer in use: evicted


def test_a_bound_in_python_is_refused_when_malformed(monkeypatch, tiny_ov_dir, tmp_path):
    monkeypatch.setenv("LCM_LITE_CACHE_SIZE", "-1G")
    with pytest.raises(UsageError, match="LCM_LITE_CACHE_SIZE"):
        LCMPipeline.from_pretrained(tiny_ov_dir, cache_dir=tmp_path)


def _generate_in_background(model: Path, cache: Path, folder: Path) -> subprocess.Popen:
    """``lcm-lite`` compiling a fresh cache (three blobs written) in a process of its own."""
    argv = [sys.executable, "-m", "lcm_lite", "x", "--model", str(model), "--width", "64"]
    return subprocess.Popen(
        [*argv, "--height", "64", "--steps", "1", "--out", "o.png"],
        cwd=folder,
        env={**os.environ, "LCM_LITE_CACHE": str(cache)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop_while_writing_a_blob(process: subprocess.Popen, cache: Path) -> Path | None:
    """Stop ``process`` (SIGSTOP) at a moment it holds a blob temporary (created and locked);
    that temporary, or ``None`` if it finished first. Temporaries already there are not its own."""
    earlier = set(cache.glob(".*.blob.*"))
    while process.poll() is None:
        if set(cache.glob(".*.blob.*")) - earlier:
            process.send_signal(signal.SIGSTOP)
            temporaries = set(cache.glob(".*.blob.*")) - earlier
            if temporaries and _locked(temporary := temporaries.pop()):
                return temporary
            process.send_signal(signal.SIGCONT)
    return None


def _locked(path: Path) -> bool:
    """Whether another process holds an exclusive ``flock`` on ``path`` (a writer between
    creating its temporary and locking it does not yet)."""
    try:
        with path.open("rb") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except FileNotFoundError:
        return False
    return False  # closing the file released the lock taken here


def _stopped_writer(model: Path, cache: Path, folder: Path) -> tuple[subprocess.Popen, Path]:
    """A real run stopped in the middle of writing a blob (a few tries: the window is short)."""
    for _ in range(10):
        process = _generate_in_background(model, cache, folder)
        temporary = _stop_while_writing_a_blob(process, cache)
        if temporary is not None:
            return process, temporary
        process.communicate(timeout=60)
        for blob in cache.glob("*.blob"):
            blob.unlink()
    pytest.fail("never caught a process writing a blob")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_first_compile_leaves_no_blob_temporary(
    sigint_reaches_children, tiny_ov_dir, tmp_path, sig, code
):
    cache = tmp_path / "cache"
    process, temporary = _stopped_writer(tiny_ov_dir, cache, tmp_path)
    process.send_signal(sig)
    process.send_signal(signal.SIGCONT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert not temporary.exists()
    assert not list(cache.glob(".*")) and not (tmp_path / "o.png").exists()


def test_temporaries_of_killed_runs_are_deleted_at_start_and_those_of_live_runs_kept(
    tiny_ov_dir, tmp_path
):
    cache = tmp_path / "cache"
    killed, left_behind = _stopped_writer(tiny_ov_dir, cache, tmp_path)
    killed.kill()  # SIGKILL: no cleanup can run
    killed.communicate(timeout=60)
    assert left_behind.exists()
    writing, being_written = _stopped_writer(tiny_ov_dir, cache, tmp_path)
    try:
        LCMPipeline.from_pretrained(tiny_ov_dir, cache_dir=cache)  # a start: prunes temporaries
        assert not left_behind.exists()
        assert being_written.exists()  # its writer is alive (stopped), holding it
    finally:
        writing.kill()
        writing.communicate(timeout=60)


def test_a_cached_unet_imports_in_the_background_while_the_text_encoder_compiles(
    tiny_ov_dir, tmp_path
):
    """The one-shot's overlap: with the UNet's blob cached, its import is under way (in a
    thread) when the text encoder starts compiling, and the UNet that runs is that import."""
    request = {"width": 64, "height": 64, "seed": 1}
    cold = LCMPipeline.from_pretrained(tiny_ov_dir, cache_dir=tmp_path, keep_models=False)
    reference = np.asarray(cold("a cat", **request)[0])
    warm = LCMPipeline.from_pretrained(tiny_ov_dir, cache_dir=tmp_path, keep_models=False)
    unet_compiler = warm.compiler.for_stage("unet")
    seen: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if done == 0:
            seen[stage] = len(unet_compiler._preloads)

    image = np.asarray(warm("a cat", progress=progress, **request)[0])
    assert seen["compile text encoder"] == 1  # the UNet's import started before it
    assert seen["compile UNet"] == 1 and unet_compiler._preloads == {}  # taken by the UNet
    assert np.array_equal(image, reference)
