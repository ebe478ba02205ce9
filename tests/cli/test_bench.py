"""``lcm-lite bench`` on the tiny model (what it reports, not how fast), and the compiled-model
cache that makes a warm start import rather than compile."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lcm_lite import LCMPipeline
from lcm_lite.cli.bench import format_table
from lcm_lite.cli.main import main


@pytest.fixture(scope="module")
def report(tiny_ov_dir) -> dict:
    """``lcm-lite bench --json`` on the tiny model: two sizes, two step counts, two images."""
    argv = ["bench", "--model", str(tiny_ov_dir), "--sizes", "64", "96", "--steps", "1", "3"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--images", "2", "--no-cache", "--json"]) == 0
    return json.loads(out.getvalue())


def test_bench_json_reports_compile_stages_and_memory_per_size_and_steps(report):
    assert report["precision"] in ("f32", "bf16", "f16")
    assert report["cache"] is False
    rows = report["rows"]
    assert [(r["width"], r["height"], r["steps"]) for r in rows] == [
        (64, 64, 1),
        (64, 64, 3),
        (96, 96, 1),
        (96, 96, 3),
    ]
    for row in rows:
        assert len(row["unet_steps"]) == row["steps"]
        assert row["images"] == 2 and len(row["timings"]) == 2
        assert row["steady_image"] > 0 and row["first_image"] > 0
        assert row["peak_rss"] >= row["peak_anon_rss"] > 0
    # a size compiles all three networks on its first image; other step counts reuse them
    assert [sorted(r["compile"]) for r in rows] == [
        ["text_encoder", "unet", "vae_decoder"],
        [],
        ["text_encoder", "unet", "vae_decoder"],
        [],
    ]


def test_the_table_has_a_line_per_size_and_steps(report):
    lines = format_table(report).splitlines()
    assert "unet/step" in lines[1]
    assert [line.split()[:2] for line in lines[2:]] == [
        ["64x64", "1"],
        ["64x64", "3"],
        ["96x96", "1"],
        ["96x96", "3"],
    ]


def test_bench_rejects_a_size_the_pipeline_would_reject(tiny_ov_dir, capsys):
    assert main(["bench", "--model", str(tiny_ov_dir), "--sizes", "100", "--json"]) == 2
    assert "multiple of 8" in capsys.readouterr().err


@pytest.fixture()
def cached_pipe(tiny_ov_dir, tmp_path):
    def open_pipe() -> LCMPipeline:
        return LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32", cache_dir=tmp_path)

    return open_pipe


def test_a_warm_cache_imports_the_compiled_networks_and_gives_the_same_image(cached_pipe, tmp_path):
    cold = cached_pipe()("a red cube", steps=2, width=64, height=64, seed=3)
    blobs = {path: path.stat().st_mtime_ns for path in tmp_path.glob("*.blob")}
    names = sorted(path.name.split("-")[0] for path in blobs)
    assert names == ["text_encoder", "unet", "vae_decoder"]
    warm = cached_pipe()("a red cube", steps=2, width=64, height=64, seed=3)
    assert np.array_equal(np.asarray(cold[0]), np.asarray(warm[0]))
    assert {path: path.stat().st_mtime_ns for path in tmp_path.glob("*.blob")} == blobs


class _MmapAsOnWindows(mmap.mmap):
    """``mmap.mmap`` as Windows has it: no ``madvise`` method."""

    def __getattribute__(self, name: str) -> object:
        if name == "madvise":
            raise AttributeError(name)
        return super().__getattribute__(name)


def test_a_warm_import_works_where_the_platform_has_no_madvise(cached_pipe, tmp_path, monkeypatch):
    cold = cached_pipe()("a red cube", steps=1, width=64, height=64, seed=3)
    blobs = {path: path.stat().st_mtime_ns for path in tmp_path.glob("*.blob")}
    monkeypatch.delattr(mmap, "MADV_DONTNEED")
    monkeypatch.setattr(mmap, "mmap", _MmapAsOnWindows)
    warm = cached_pipe()("a red cube", steps=1, width=64, height=64, seed=3)
    assert np.array_equal(np.asarray(cold[0]), np.asarray(warm[0]))
    # imported, not compiled and written again
    assert {path: path.stat().st_mtime_ns for path in tmp_path.glob("*.blob")} == blobs


def test_a_damaged_cache_entry_is_compiled_and_written_again(cached_pipe, tmp_path):
    cold = cached_pipe()("a red cube", steps=1, width=64, height=64, seed=3)
    for blob in tmp_path.glob("*.blob"):
        blob.write_bytes(b"not a compiled model")
    again = cached_pipe()("a red cube", steps=1, width=64, height=64, seed=3)
    assert np.array_equal(np.asarray(cold[0]), np.asarray(again[0]))
    assert all(blob.stat().st_size > 1000 for blob in tmp_path.glob("*.blob"))


def test_another_size_gets_its_own_cache_entries(cached_pipe, tmp_path):
    pipe = cached_pipe()
    pipe("a red cube", steps=1, width=64, height=64, seed=3)
    pipe("a red cube", steps=1, width=64, height=96, seed=3)
    assert len(list(tmp_path.glob("unet-*.blob"))) == 2


def test_a_run_with_onednns_instruction_sets_capped_gets_its_own_cache_entries(
    cached_pipe, tmp_path, monkeypatch
):
    cached_pipe()("a red cube", steps=1, width=64, height=64, seed=3)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")  # "no cap": the kernels stay as they are
    cached_pipe()("a red cube", steps=1, width=64, height=64, seed=3)
    assert len(list(tmp_path.glob("unet-*.blob"))) == 2


DAY = 24 * 3600


def _age(path: Path, *, used_days_ago: float, written_days_ago: float) -> None:
    now = time.time()
    os.utime(path, (now - used_days_ago * DAY, now - written_days_ago * DAY))


def test_importing_a_cached_network_marks_it_used_without_rewriting_it(tiny_ov_dir, tmpfs):
    cache = tmpfs("cache", "noatime,size=256m")  # where reading never updates the access time

    def generate() -> None:
        pipe = LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32", cache_dir=cache)
        pipe("a red cube", steps=1, width=64, height=64, seed=3)

    generate()
    for blob in cache.glob("*.blob"):
        _age(blob, used_days_ago=40, written_days_ago=40)
    written = {blob: blob.stat().st_mtime_ns for blob in cache.glob("*.blob")}
    generate()
    assert {blob: blob.stat().st_mtime_ns for blob in cache.glob("*.blob")} == written
    assert all(time.time() - blob.stat().st_atime < 3600 for blob in written)


def test_writing_a_blob_deletes_blobs_unused_for_30_days_and_stale_temporaries(
    cached_pipe, tmp_path
):
    unused = tmp_path / "unet-0123456789abcdef01234567.blob"
    used_lately = tmp_path / "unet-fedcba9876543210fedcba98.blob"
    killed_write = tmp_path / ".unet-0123.blob.k1ll3d"
    ongoing_write = tmp_path / ".unet-4567.blob.wr1t1n"
    not_ours = tmp_path / "notes.txt"
    for path in (unused, used_lately, killed_write, ongoing_write, not_ours):
        path.write_bytes(b"x")
        _age(path, used_days_ago=31, written_days_ago=31)
    _age(used_lately, used_days_ago=29, written_days_ago=90)
    _age(ongoing_write, used_days_ago=0, written_days_ago=0.01)
    with ongoing_write.open("rb") as writer:  # a live writer holds its temporary locked
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        cached_pipe()("a red cube", steps=1, width=64, height=64, seed=3)
    assert not unused.exists() and not killed_write.exists()
    assert used_lately.exists() and ongoing_write.exists() and not_ours.exists()
    assert len(list(tmp_path.glob("*.blob"))) == 4  # used_lately and the three just written


def test_the_raw_openvino_profile_counts_flops_and_times_each_op_type(tiny_ov_dir):
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "raw_openvino.py"

    def profile(size: int) -> dict:
        argv = [sys.executable, str(script), str(tiny_ov_dir), "--size", str(size)]
        run = subprocess.run([*argv, "--repeats", "1", "--profile"], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)

    small, large = profile(64), profile(128)
    for name in ("text_encoder", "unet", "vae_decoder"):
        network = small["profile"][name]
        assert network["gflop"] > 0
        assert network["gflop_per_s"] == pytest.approx(network["gflop"] / small[name], rel=0.05)
        assert "FullyConnected" in network["seconds_by_op_type"]
    assert "Convolution" in small["profile"]["vae_decoder"]["seconds_by_op_type"]
    text_gflop = [report["profile"]["text_encoder"]["gflop"] for report in (small, large)]
    assert text_gflop[0] == text_gflop[1]  # 77 tokens at any image size
    assert large["profile"]["vae_decoder"]["gflop"] > 3.9 * small["profile"]["vae_decoder"]["gflop"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--images", "0"], "--images must be at least 1, got 0"),
        (["--images", "-3"], "--images must be at least 1"),
        (["--sizes", "60"], "width must be a multiple of 8"),
        (["--sizes", "0"], "width must be from 8"),
        (["--steps", "0"], "steps must be from 1"),
        (["--seed", "-1"], "seed must be an integer from 0 to 2**64-1"),
        (["--images", "two"], "expected an integer"),
    ],
)
def test_bench_options_are_checked_like_generates_one_line_and_exit_code_2(
    tiny_ov_dir, tmp_path, options, message
):
    argv = [sys.executable, "-m", "lcm_lite", "bench", "--model", str(tiny_ov_dir), *options]
    run = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("lcm-lite: error: ") and run.stderr.count("\n") == 1
    assert message in run.stderr
