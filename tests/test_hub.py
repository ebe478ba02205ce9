"""Model resolution: a local folder as is; a hub id from huggingface_hub's cache, offline."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


# --- the VAE encoder comes with the first image-to-image call -------------------------------


@pytest.fixture
def local_hub(tiny_ov_dir):
    """A stand-in for the Hugging Face hub (unreachable here) on 127.0.0.1, serving
    ``tiny_ov_dir`` as ``someone/tiny-lcm-ov`` through the endpoints huggingface_hub's
    ``snapshot_download`` uses; yields its URL and the list of files downloaded from it."""
    files = sorted(str(p.relative_to(tiny_ov_dir)) for p in tiny_ov_dir.rglob("*") if p.is_file())
    downloaded: list[str] = []
    repo = "someone/tiny-lcm-ov"

    class Hub(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(200)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        def do_GET(self):
            path = urllib.parse.unquote(self.path.split("?")[0])
            if path.startswith(f"/api/models/{repo}/revision/"):
                info = {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}
                return self._reply(json.dumps(info).encode(), {})
            if path.startswith(f"/api/models/{repo}/tree/"):
                tree = [
                    {"type": "file", "path": f, "size": len(data), "oid": _sha1(data)}
                    for f in files
                    for data in [(tiny_ov_dir / f).read_bytes()]
                ]
                return self._reply(json.dumps(tree).encode(), {})
            if path.startswith(f"/{repo}/resolve/"):
                name = path.split("/", 5)[5]
                downloaded.append(name)
                data = (tiny_ov_dir / name).read_bytes()
                etag = f'"{hashlib.sha256(data).hexdigest()}"'
                return self._reply(data, {"X-Repo-Commit": COMMIT, "ETag": etag})
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", downloaded
    server.shutdown()


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def test_the_vae_encoder_is_downloaded_on_the_first_image_to_image_call_only(local_hub, tmp_path):
    endpoint, downloaded = local_hub
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)).save(
        tmp_path / "start.png"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": endpoint}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_HUB_CACHE", None)

    def generate(*args):
        argv = [sys.executable, "-m", "lcm_lite", "x", "--model", "someone/tiny-lcm-ov", *args]
        run = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr

    generate("--width", "64", "--height", "64", "--seed", "1")
    assert downloaded and not any(name.startswith("vae_encoder/") for name in downloaded)
    downloaded.clear()

    generate("--image", "start.png", "--seed", "1")
    assert {name.split("/")[0] for name in downloaded} == {"vae_encoder"}
    downloaded.clear()

    generate("--image", "start.png", "--seed", "2")
    assert not any(name.startswith("vae_encoder/") for name in downloaded)


def test_a_cached_hub_model_without_its_encoder_offline_says_how_to_get_it(
    tiny_ov_dir, offline_hub, tmp_path
):
    text_only = tmp_path / "text-only"
    shutil.copytree(tiny_ov_dir, text_only, ignore=shutil.ignore_patterns("vae_encoder"))
    _lay_out_hub_cache(offline_hub, "someone/tiny-lcm-ov", text_only)
    Image.new("RGB", (64, 48), "teal").save(tmp_path / "start.png")
    env = {**os.environ, "HF_HOME": str(offline_hub), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    argv = [sys.executable, "-m", "lcm_lite", "x", "--model", "someone/tiny-lcm-ov"]

    run = subprocess.run(
        [*argv, "--image", "start.png"], cwd=tmp_path, env=env, capture_output=True, text=True
    )

    assert run.returncode == 3
    assert run.stderr.count("\n") == 1
    assert "hf download someone/tiny-lcm-ov --include 'vae_encoder/*'" in run.stderr
    assert [path.name for path in tmp_path.glob("*.png")] == ["start.png"]  # nothing written
