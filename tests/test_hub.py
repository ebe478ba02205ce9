"""Model resolution: a local folder as is; a hub id from huggingface_hub's cache, offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lcm_lite import LCMPipeline
from lcm_lite.errors import ModelError, UsageError
from lcm_lite.hub import DEFAULT_MODEL, RUNTIME_FILES, resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _lay_out_hub_cache(hf_home, repo_id, model_dir, revision="main"):
    """Put ``model_dir`` into ``hf_home`` the way huggingface_hub lays out its cache: content in
    ``blobs/``, the snapshot as symbolic links, and ``refs/<revision>`` naming the commit."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    for index, source in enumerate(sorted(p for p in model_dir.rglob("*") if p.is_file())):
        blob = repo / "blobs" / f"{index:040x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, blob)
        link = snapshot / source.relative_to(model_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / revision).write_text(COMMIT)
    return snapshot


@pytest.fixture
def offline_hub(tmp_path):
    """An empty huggingface_hub home, used offline (the hub is unreachable here anyway)."""
    return tmp_path / "hf"


def _info(hf_home, *args):
    """``lcm-lite info`` in a fresh process with ``HF_HOME`` set, as a user runs it: huggingface_hub
    reads its environment when it is imported, so the variables must be set before the start."""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run(
        [sys.executable, "-m", "lcm_lite", "info", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_local_folder_resolves_to_itself(tiny_ov_dir):
    assert resolve_model(str(tiny_ov_dir)) == tiny_ov_dir


def test_a_cached_hub_id_resolves_offline_to_its_snapshot(tiny_ov_dir, offline_hub):
    snapshot = _lay_out_hub_cache(offline_hub, "someone/tiny-lcm-ov", tiny_ov_dir)
    run = _info(offline_hub, "--model", "someone/tiny-lcm-ov")
    assert run.returncode == 0, run.stderr
    assert f"model: {snapshot}" in run.stdout.splitlines()


def test_the_default_model_is_the_openvino_int8_lcm_and_resolves_from_the_cache(
    tiny_ov_dir, offline_hub
):
    snapshot = _lay_out_hub_cache(offline_hub, DEFAULT_MODEL, tiny_ov_dir)
    assert DEFAULT_MODEL == "OpenVINO/LCM_Dreamshaper_v7-int8-ov"
    run = _info(offline_hub)
    assert run.returncode == 0, run.stderr
    assert f"model: {snapshot}" in run.stdout.splitlines()


def test_a_revision_selects_that_ref_of_the_cache(tiny_ov_dir, offline_hub):
    snapshot = _lay_out_hub_cache(offline_hub, "someone/tiny-lcm-ov", tiny_ov_dir, "v1")
    run = _info(offline_hub, "--model", "someone/tiny-lcm-ov", "--revision", "v1")
    assert f"model: {snapshot}" in run.stdout.splitlines()
    run = _info(offline_hub, "--model", "someone/tiny-lcm-ov", "--revision", "v2")
    assert run.returncode == 3
    assert "not in the local Hugging Face cache" in run.stderr


def test_an_uncached_model_offline_says_what_to_do_in_one_line(offline_hub):
    run = _info(offline_hub, "--model", "someone/not-downloaded")
    assert run.returncode == 3
    assert run.stderr.count("\n") == 1
    assert "HF_HUB_OFFLINE" in run.stderr
    assert "lcm-lite-convert" in run.stderr
    assert "Traceback" not in run.stderr


def test_only_the_runtime_files_are_fetched():
    assert not any(
        p.startswith(("vae_encoder", "safety_checker", "feature_extractor")) for p in RUNTIME_FILES
    )
    for needed in ("unet/*", "text_encoder/*", "vae_decoder/*", "scheduler/scheduler_config.json"):
        assert needed in RUNTIME_FILES


def test_a_missing_local_path_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="model folder not found"):
        resolve_model(str(tmp_path / "absent"))


def test_importing_lcm_lite_loads_nothing_heavy_and_opens_no_connection():
    code = (
        "import sys, socket\n"
        "socket.socket = None\n"  # any connection attempt at import time would fail loudly
        "import lcm_lite\n"
        "heavy = {'openvino', 'numpy', 'huggingface_hub', 'PIL'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "model",
    [Path("missing/dir"), "./missing", "../missing/dir", "/missing/dir", "~/missing", "missing"],
)
def test_a_path_that_does_not_exist_is_model_folder_not_found_never_a_hub_id(model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub look-up would say "not in the cache"
    with pytest.raises(ModelError, match="model folder not found"):
        LCMPipeline.from_pretrained(model)


def test_a_revision_with_a_local_folder_is_refused(tiny_ov_dir, offline_hub):
    with pytest.raises(UsageError, match="--revision v1 applies to hub models only"):
        resolve_model(tiny_ov_dir, "v1")
    run = _info(offline_hub, "--model", str(tiny_ov_dir), "--revision", "v1")
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "is a local folder" in run.stderr
