"""Model resolution: a local folder as is; a hub id from huggingface_hub's cache, offline."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import shutil
import socket
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
from lcm_lite.models.hub import DEFAULT_MODEL, resolve_model

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


def _info(hf_home, *args, **env):
    """``lcm-lite info`` in a fresh process with ``HF_HOME`` and ``env`` set, as a user runs it:
    huggingface_hub reads its environment when it is imported, so the variables must be set
    before the start. Offline, unless ``env`` names an ``HF_ENDPOINT`` (a fake hub on loopback)."""
    environment = {**os.environ, "HF_HOME": str(hf_home), **env}
    for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "NO_PROXY", "no_proxy"):
        environment.pop(name, None)
    if "HF_ENDPOINT" not in env:
        environment["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "lcm_lite", "info", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
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


class FakeHub:
    """A Hugging Face hub on loopback serving one model repository from a folder: the three
    routes ``snapshot_download`` uses (revision info, file tree, file resolve), recording each
    file request. ``cut_short`` names a file whose body stops halfway (a connection lost)."""

    def __init__(self, repo_id: str, folder: Path, cut_short: str | None = None) -> None:
        self.repo_id, self.cut_short, self.fetched = repo_id, cut_short, []
        self.files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._send_file(body=False)

            def do_GET(self) -> None:
                route = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                if route.startswith(f"/api/models/{hub.repo_id}/revision/"):
                    self._send_json({"id": hub.repo_id, "sha": COMMIT, "siblings": []})
                elif route.startswith(f"/api/models/{hub.repo_id}/tree/"):
                    self._send_json(
                        [
                            {
                                "type": "file",
                                "path": name,
                                "size": path.stat().st_size,
                                "oid": hashlib.sha1(path.read_bytes()).hexdigest(),
                            }
                            for name, path in hub.files.items()
                        ]
                    )
                else:
                    self._send_file(body=True)

            def _send_json(self, value: object) -> None:
                data = json.dumps(value).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _send_file(self, body: bool) -> None:
                route = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                prefix = f"/{hub.repo_id}/resolve/{COMMIT}/"
                name = route.removeprefix(prefix)
                if not route.startswith(prefix) or name not in hub.files:
                    self.send_error(404)
                    return
                data = hub.files[name].read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    hub.fetched.append(name)
                    cut = len(data) // 2 if name == hub.cut_short else len(data)
                    self.wfile.write(data[:cut])
                    self.close_connection = True

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub_repo(tiny_ov_dir, tmp_path):
    """The tiny model as a hub repository holds it: with the files the runtime does not read."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny_ov_dir, repo)
    for extra in ("safety_checker/model.safetensors", "feature_extractor/preprocessor_config.json"):
        (repo / extra).parent.mkdir()
        (repo / extra).write_text("{}")
    return repo


def test_only_the_runtime_files_are_fetched(hub_repo, tmp_path):
    hub = FakeHub("someone/tiny-lcm-ov", hub_repo)
    try:
        run = _info(tmp_path / "hf", "--model", "someone/tiny-lcm-ov", HF_ENDPOINT=hub.url)
    finally:
        hub.close()
    assert run.returncode == 0, run.stderr
    snapshot = Path(run.stdout.splitlines()[0].removeprefix("model: "))
    on_disk = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    assert sorted(hub.fetched) == sorted(on_disk)
    expected = {
        name
        for name in hub.files
        if name.split("/")[0] in ("text_encoder", "unet", "vae_decoder")
        or name in ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/merges.txt")
        or (name.startswith("tokenizer/") and name.endswith(".json"))
    }
    assert on_disk == expected
    left_out = set(hub.files) - on_disk
    assert {name.split("/")[0] for name in left_out} >= {
        "vae_encoder",
        "safety_checker",
        "feature_extractor",
    }
    assert "tokenizer/openvino_tokenizer.xml" in left_out  # openvino_tokenizers' files too


def _last_line_error(run, *phrases):
    assert run.returncode == 3, run.stderr
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("lcm-lite: error: cannot download someone/tiny-lcm-ov: "), last
    for phrase in phrases:
        assert phrase in last


@pytest.mark.slow
def test_a_connection_lost_mid_download_is_exit_code_3_and_says_run_again(hub_repo, tmp_path):
    hub = FakeHub("someone/tiny-lcm-ov", hub_repo, cut_short="unet/openvino_model.bin")
    try:
        run = _info(tmp_path / "hf", "--model", "someone/tiny-lcm-ov", HF_ENDPOINT=hub.url)
    finally:
        hub.close()
    assert "unet/openvino_model.bin" in hub.fetched
    _last_line_error(run, "the connection to the hub was lost", "run again to resume")


def test_a_proxy_that_refuses_is_exit_code_3_and_names_the_proxy(hub_repo, tmp_path):
    """The hub over HTTPS through a proxy that answers CONNECT with 407 (both on loopback)."""
    proxy = socket.create_server(("127.0.0.1", 0))

    def refuse() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = proxy.accept()
                with connection:
                    connection.recv(65536)
                    connection.sendall(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
                    )

    threading.Thread(target=refuse, daemon=True).start()
    hub = FakeHub("someone/tiny-lcm-ov", hub_repo)
    try:
        run = _info(
            tmp_path / "hf",
            "--model",
            "someone/tiny-lcm-ov",
            HF_ENDPOINT=hub.url.replace("http://", "https://"),
            HTTPS_PROXY=f"http://127.0.0.1:{proxy.getsockname()[1]}",
        )
    finally:
        hub.close()
        proxy.close()
    _last_line_error(run, "the proxy refused the connection", "407", "HTTPS_PROXY")


def test_a_full_disk_during_a_download_is_exit_code_3_and_says_where(hub_repo, tmpfs):
    small = tmpfs("hf", "size=1m")  # the tiny model takes about 5 MB
    hub = FakeHub("someone/tiny-lcm-ov", hub_repo)
    try:
        run = _info(small, "--model", "someone/tiny-lcm-ov", HF_ENDPOINT=hub.url)
    finally:
        hub.close()
    _last_line_error(run, "no space left", "HF_HOME")


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
    ``tiny_ov_dir`` as ``someone/tiny-lcm-ov``; yields its URL and the list of files downloaded
    from it."""
    hub = FakeHub("someone/tiny-lcm-ov", tiny_ov_dir)
    yield hub.url, hub.fetched
    hub.close()


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


def test_the_default_model_fetches_its_vae_encoder_on_the_first_image_to_image_call(
    tiny_ov_dir, tmp_path
):
    """No --model: the default hub model, whose encoder comes on the first call with a picture."""
    hub = FakeHub(DEFAULT_MODEL, tiny_ov_dir)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        tmp_path / "start.png"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": hub.url}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_HUB_CACHE", None)
    try:
        argv = [sys.executable, "-m", "lcm_lite", "x", "--image", "start.png", "--seed", "1"]
        run = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    finally:
        hub.close()
    assert run.returncode == 0, run.stderr
    assert any(name.startswith("vae_encoder/") for name in hub.fetched)
