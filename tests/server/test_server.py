"""``lcm-lite serve``: the real server on a free loopback port, with the tiny model, over HTTP."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from lcm_lite.cli.main import main as cli_main
from lcm_lite.cli.serve import serve_parser
from lcm_lite.errors import UsageError
from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
from lcm_lite.server.app import MAX_BODY_BYTES, MAX_PICTURE_BODY_BYTES
from lcm_lite.server.running import Server
from lcm_lite.server.schemas import MAX_PICTURE_BASE64_CHARS
from lcm_lite.server.security import SECURITY_HEADERS

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "correct-horse-battery-staple"
SMALL = {"width": 64, "height": 64, "steps": 1}
SLOW = {"width": 512, "height": 512, "steps": 8, "num_images": 4}  # 3 s on a quiet 2-core EPYC


class Reply:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def json(self) -> dict:
        return json.loads(self.body)


def call(
    url: str,
    method: str,
    path: str,
    body: object = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> Reply:
    """One request; a dict or list body is sent as JSON, bytes as they are."""
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=timeout)
    headers = dict(headers or {})
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
    try:
        connection.request(method, path, body=body, headers=headers)
        return Reply(connection.getresponse())
    finally:
        connection.close()


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture(scope="module")
def server(f32_pipe: LCMPipeline) -> Iterator[Server]:
    with Server(f32_pipe, port=0, capacity=2, model="tiny") as server:
        yield server


@pytest.fixture(scope="module")
def guarded(f32_pipe: LCMPipeline) -> Iterator[Server]:
    with Server(f32_pipe, port=0, token=TOKEN, capacity=2, model="tiny") as server:
        yield server


def test_health_is_ok_without_a_token(server: Server, guarded: Server) -> None:
    for running in (server, guarded):
        reply = call(running.url, "GET", "/api/health")
        assert (reply.status, reply.json()) == (200, {"status": "ok"})


def test_info_names_the_model_device_limits_and_defaults(server: Server) -> None:
    info = call(server.url, "GET", "/api/info").json()
    assert (info["model"], info["device"], info["native_size"]) == ("tiny", "CPU", 256)
    assert info["limits"]["width"] == {"min": 64, "max": 1024, "multiple_of": 8}
    assert info["limits"]["steps"] == {"min": 1, "max": 8, "multiple_of": 1}
    assert info["limits"]["num_images"]["max"] == 4
    assert info["limits"]["body_bytes"] == MAX_BODY_BYTES
    assert info["limits"]["picture_body_bytes"] == MAX_PICTURE_BODY_BYTES
    assert info["limits"]["picture_pixels"] == 4096 * 4096  # checked from the header
    assert info["previews"] is False
    assert info["defaults"] == {
        "width": 512,
        "height": 512,
        "steps": 4,
        "guidance": 8.0,
        "num_images": 1,
        "strength": 0.8,  # the page's slider starts there
        "control_guidance_start": 0.0,
        "control_guidance_end": 1.0,
        "canny_thresholds": [100.0, 200.0],
    }
    assert {key: info["queue"][key] for key in ("capacity", "waiting", "running")} == {
        "capacity": 2,
        "waiting": 0,
        "running": False,
    }
    assert {"done", "failed", "cancelled"} <= set(info["queue"])


def test_the_page_loads_its_script_and_style_from_the_server_alone(server: Server) -> None:
    page = call(server.url, "GET", "/")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.body.decode()
    assert page.body == (REPO_ROOT / "lcm_lite" / "static" / "index.html").read_bytes()
    linked = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(linked) == [
        "/app.js",
        "/control.css",
        "/control.js",
        "/live.js",
        "/mask.css",
        "/mask.js",
        "/style.css",
    ]
    for path in linked:
        content_type = "text/javascript" if path.endswith(".js") else "text/css"
        asset = call(server.url, "GET", path)
        assert asset.status == 200
        assert asset.headers["Content-Type"] == f"{content_type}; charset=utf-8"
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
        assert not re.search(r"https?://", asset.body.decode())
    for control in (
        "prompt",
        "seed",
        "randomize",
        "width",
        "height",
        "guidance",
        "steps",
        "num_images",
        "picture",
        "strength",
    ):
        assert f'for="{control}"' in html or f'id="{control}" type="checkbox"' in html


def test_generate_answers_json_with_pngs_that_carry_their_settings(server: Server) -> None:
    reply = call(
        server.url,
        "POST",
        "/api/generate",
        {"prompt": "a red cube", "seed": 7, "num_images": 2, "guidance": 6.5, **SMALL},
    )
    assert reply.status == 200
    result = reply.json()
    assert (result["state"], result["seed"], result["step"], result["steps"]) == ("done", 7, 1, 1)
    assert result["seconds"] > 0 and "vae_decoder" in result["timings"]
    assert [image["index"] for image in result["images"]] == [0, 1]
    for index, image in enumerate(result["images"]):
        picture = png(base64.b64decode(image["png_base64"]))
        assert picture.size == (64, 64)
        assert np.asarray(picture).std() > 0
        assert {
            key: picture.text[f"lcm-lite:{key}"]
            for key in ("prompt", "seed", "guidance", "index", "model")
        } == {
            "prompt": "a red cube",
            "seed": "7",
            "guidance": "6.5",
            "index": str(index),
            "model": "tiny",
        }


def test_the_same_seed_gives_the_same_image_and_no_seed_a_random_one_safe_in_javascript(
    server: Server,
) -> None:
    def first_image(extra: dict) -> tuple[int, bytes]:
        result = call(server.url, "POST", "/api/generate", {"prompt": "a cat", **SMALL, **extra})
        data = result.json()
        return data["seed"], np.asarray(png(base64.b64decode(data["images"][0]["png_base64"])))

    seed, image = first_image({})
    assert 0 <= seed < 2**53
    again_seed, again = first_image({"seed": seed})
    assert again_seed == seed and np.array_equal(image, again)


@pytest.mark.parametrize("prompt", ["", "   "])
def test_an_empty_or_whitespace_prompt_is_allowed_and_gives_the_pipelines_image(
    server: Server, f32_pipe: LCMPipeline, prompt: str
) -> None:
    reply = call(server.url, "POST", "/api/generate", {"prompt": prompt, "seed": 9, **SMALL})
    assert reply.status == 200, reply.body
    served = np.asarray(png(base64.b64decode(reply.json()["images"][0]["png_base64"])))
    alone = f32_pipe(prompt, seed=9, width=64, height=64, steps=1)[0]
    assert np.array_equal(served, np.asarray(alone))


@pytest.mark.parametrize("how", [{"headers": {"Accept": "image/png"}}, {"query": "?format=png"}])
def test_png_bytes_come_back_when_asked_for_with_the_seed_in_a_header(
    server: Server, how: dict
) -> None:
    reply = call(
        server.url,
        "POST",
        "/api/generate" + how.get("query", ""),
        {"prompt": "a red cube", "seed": 11, **SMALL},
        headers=how.get("headers"),
    )
    assert (reply.status, reply.headers["Content-Type"], reply.headers["X-Seed"]) == (
        200,
        "image/png",
        "11",
    )
    assert png(reply.body).size == (64, 64)


def test_a_submitted_job_reports_its_steps_until_its_images_are_ready(server: Server) -> None:
    submitted = call(
        server.url, "POST", "/api/jobs", {"prompt": "a red cube", "seed": 3, **SMALL, "steps": 3}
    )
    assert submitted.status == 202
    job = submitted.json()
    assert job["state"] in ("queued", "running") and job["steps"] == 3
    location = submitted.headers["Location"]
    assert location == f"/api/jobs/{job['id']}"
    steps_seen = []
    while job["state"] in ("queued", "running"):
        time.sleep(0.02)
        job = call(server.url, "GET", location).json()
        steps_seen.append(job["step"])
    assert job["state"] == "done" and job["step"] == 3
    assert steps_seen == sorted(steps_seen)
    assert png(base64.b64decode(job["images"][0]["png_base64"])).size == (64, 64)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/api/jobs/0123456789abcdef", 404),
        ("GET", "/static/../server.py", 404),
        ("GET", "/../../etc/passwd", 404),
        ("GET", "/api/generate", 405),
        ("POST", "/api/info", 405),
    ],
)
def test_unknown_paths_jobs_and_methods_get_a_json_error(
    server: Server, method: str, path: str, status: int
) -> None:
    reply = call(server.url, method, path, {} if method == "POST" else None)
    assert reply.status == status
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json()["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not valid JSON"),
        (b'{"prompt": "x", "guidance": NaN}', "guidance: Input should be a finite number"),
        ([1, 2], "Input should be a valid dictionary or object"),
        ({"width": 64}, "prompt: Field required"),
        ({"prompt": 5}, "prompt: Input should be a valid string, got 5"),
        ({"prompt": "x" * 1001}, "prompt: String should have at most 1000 characters"),
        ({"prompt": "a\x00b"}, "a prompt contains a NUL character"),
        ({"prompt": "a\ud800b"}, "prompt: Input should be a valid string, unable to parse"),
        ({"prompt": "x", "guidance_scale": 8}, "guidance_scale: Extra inputs are not permitted"),
        ({"prompt": "x", "width": "64"}, "width: Input should be a valid integer, got '64'"),
        ({"prompt": "x", "width": 64.5}, "width: Input should be a valid integer, got 64.5"),
        ({"prompt": "x", "steps": True}, "steps: Input should be a valid integer, got True"),
        ({"prompt": "x", "width": 1032}, "width: Input should be less than or equal to 1024"),
        ({"prompt": "x", "height": 32}, "height: Input should be greater than or equal to 64"),
        ({"prompt": "x", "width": 100}, "width: Input should be a multiple of 8, got 100"),
        ({"prompt": "x", "steps": 0}, "steps: Input should be greater than or equal to 1"),
        ({"prompt": "x", "steps": 9}, "steps: Input should be less than or equal to 8"),
        ({"prompt": "x", "num_images": 5}, "num_images: Input should be less than or equal to 4"),
        ({"prompt": "x", "guidance": 20.5}, "guidance: Input should be less than or equal to 20"),
        ({"prompt": "x", "guidance": "8"}, "guidance: Input should be a valid number, got '8'"),
        ({"prompt": "x", "seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"prompt": "x", "seed": 2**64}, "seed: Input should be less than 18446744073709551616"),
        ({"prompt": "x", "seed": 1.5}, "seed: Input should be a valid integer, got 1.5"),
        (
            {"prompt": "x", "width": 100, "steps": 0},
            "steps: Input should be greater than or equal to 1, got 0; width: Input should be a "
            "multiple of 8, got 100",
        ),
    ],
)
def test_invalid_requests_are_refused_with_400_and_say_what_is_wrong(
    server: Server, body: object, message: str
) -> None:
    for path in ("/api/generate", "/api/jobs"):
        reply = call(server.url, "POST", path, body)
        assert reply.status == 400
        assert message in reply.json()["error"]


def test_a_body_not_sent_as_json_is_refused_with_415(server: Server) -> None:
    reply = call(
        server.url,
        "POST",
        "/api/generate",
        b'{"prompt": "x"}',
        headers={"Content-Type": "text/plain"},
    )
    assert reply.status == 415
    assert "application/json" in reply.json()["error"]


def send_chunked(server: Server, path: str, body: bytes) -> Reply:
    """POST ``body`` in chunks of 4 KiB, without a Content-Length."""
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    chunks = (body[start : start + 4096] for start in range(0, len(body), 4096))
    try:
        connection.request(
            "POST",
            path,
            body=chunks,
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        return Reply(connection.getresponse())
    finally:
        connection.close()


LIMITS = [  # a path, and the largest body it takes
    ("/v1/images/generations", MAX_BODY_BYTES),
    ("/api/generate", MAX_PICTURE_BODY_BYTES),  # the JSON API takes a picture
]


@pytest.mark.parametrize(("path", "limit"), LIMITS)
def test_a_chunked_body_is_read_and_counted_against_the_limit(
    server: Server, path: str, limit: int
) -> None:
    small = json.dumps({"prompt": "chunked", **SMALL, "size": "64x64"}).encode()
    assert send_chunked(server, "/v1/images/generations", small).status == 200
    reply = send_chunked(server, path, json.dumps({"prompt": "x" * limit}).encode())
    assert reply.status == 413
    assert f"at most {limit} bytes" in json.dumps(reply.json()["error"])


@pytest.mark.parametrize(("path", "limit"), LIMITS)
@pytest.mark.parametrize("times", [1, 4])
def test_a_body_over_the_limit_is_refused_with_413_that_the_client_reads(
    server: Server, path: str, limit: int, times: int
) -> None:
    reply = call(server.url, "POST", path, b"x" * (limit * times + 1))
    assert reply.status == 413
    assert f"at most {limit} bytes" in json.dumps(reply.json()["error"])
    assert call(server.url, "GET", "/api/health").status == 200


@pytest.mark.parametrize(("path", "limit"), LIMITS)
def test_a_client_that_asks_before_sending_an_oversized_body_is_refused_at_once(
    server: Server, path: str, limit: int
) -> None:
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    connection.putrequest("POST", path)
    for name, value in (
        ("Content-Type", "application/json"),
        ("Expect", "100-continue"),
        ("Content-Length", str(limit + 1)),
    ):
        connection.putheader(name, value)
    connection.endheaders()  # and no body: the answer comes without it
    reply = Reply(connection.getresponse())
    connection.close()
    assert reply.status == 413


def a_picture(width: int = 80, height: int = 72) -> bytes:
    picture = io.BytesIO()
    Image.effect_noise((width, height), 60).convert("RGB").save(picture, format="PNG")
    return picture.getvalue()


@pytest.mark.parametrize("as_data_url", [False, True])
def test_a_base64_picture_makes_image_to_image_as_the_pipeline_does(
    server: Server, f32_pipe: LCMPipeline, as_data_url: bool
) -> None:
    picture = a_picture()
    encoded = base64.b64encode(picture).decode()
    if as_data_url:
        encoded = f"data:image/png;base64,{encoded}"
    body = {"prompt": "a blue cube", "image": encoded, "strength": 0.5, "steps": 2, "seed": 4}
    reply = call(server.url, "POST", "/api/generate", body)
    assert reply.status == 200, reply.body
    job = reply.json()
    assert (job["width"], job["height"], job["strength"]) == (80, 72, 0.5)  # the picture's size
    served = png(base64.b64decode(job["images"][0]["png_base64"]))
    assert served.text["lcm-lite:strength"] == "0.5"
    alone = f32_pipe("a blue cube", image=picture, strength=0.5, steps=2, seed=4)[0]
    assert np.array_equal(np.asarray(served), np.asarray(alone))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("not base64!", "image must be a picture in base64"),
        (base64.b64encode(b"not a picture").decode(), "not a PNG, JPEG or WebP picture"),
        ("A" * (MAX_PICTURE_BASE64_CHARS + 4), "image: String should have at most"),
        (base64.b64encode(a_picture(2048, 64)).decode(), "larger than 1024 pixels a side"),
        (base64.b64encode(a_picture(8, 8)).decode(), "8x8 image, smaller than 64 pixels a side"),
        (base64.b64encode(a_picture(64, 8)).decode(), "64x8 image, smaller than 64 pixels"),
    ],
)
def test_a_bad_picture_is_refused_with_400(server: Server, image: str, message: str) -> None:
    body = {"prompt": "x", "image": image, "steps": 1}  # the size: the picture's
    reply = call(server.url, "POST", "/api/generate", body)
    assert reply.status == 400
    assert message in reply.json()["error"]


@pytest.fixture(scope="module")
def previewing(previews_pipe: LCMPipeline) -> Iterator[Server]:
    with Server(previews_pipe, port=0, capacity=2, model="tiny") as server:
        yield server


@pytest.mark.slow
def test_a_running_job_shows_its_latest_step_preview_until_its_images_replace_it(
    previewing: Server,
) -> None:
    assert call(previewing.url, "GET", "/api/info").json()["previews"] is True
    body = {"prompt": "a lighthouse", "seed": 8, "previews": True, **SLOW}
    job = call(previewing.url, "POST", "/api/jobs", body).json()
    previews = {}  # step: preview
    while job["state"] in ("queued", "running"):
        if job.get("preview_png_base64"):
            previews[job["step"]] = png(base64.b64decode(job["preview_png_base64"]))
        job = call(previewing.url, "GET", f"/api/jobs/{job['id']}").json()
    assert job["state"] == "done" and job.get("preview_png_base64") is None
    assert previews and all(step >= 1 for step in previews)
    assert {preview.size for preview in previews.values()} == {(SLOW["width"], SLOW["height"])}
    assert all(np.asarray(preview).std() > 0 for preview in previews.values())


def test_vae_tiny_decodes_with_the_tiny_vae_as_the_pipeline_does(
    previewing: Server, previews_pipe: LCMPipeline
) -> None:
    body = {"prompt": "a red cube", "seed": 6, "vae": "tiny", **SMALL}
    job = call(previewing.url, "POST", "/api/generate", body).json()
    served = png(base64.b64decode(job["images"][0]["png_base64"]))
    assert (job["vae"], served.text["lcm-lite:vae"]) == ("tiny", "tiny")
    alone = previews_pipe("a red cube", seed=6, vae="tiny", width=64, height=64, steps=1)[0]
    assert np.array_equal(np.asarray(served), np.asarray(alone))


@pytest.mark.parametrize(
    ("negative_prompt", "message"),
    [
        ("blurry", "a latent consistency model takes no negative prompt"),
        ("a\x00b", "a prompt contains a NUL character"),
    ],
)
@pytest.mark.parametrize("path", ["/api/generate", "/api/jobs"])
def test_a_negative_prompt_the_model_cannot_take_is_refused_with_400(
    server: Server, negative_prompt: str, message: str, path: str
) -> None:
    done_before = server.jobs.outcomes.copy()
    body = {"prompt": "x", "negative_prompt": negative_prompt, **SMALL}
    reply = call(server.url, "POST", path, body)
    assert reply.status == 400 and message in reply.json()["error"]
    assert "\n" not in reply.json()["error"]
    assert server.jobs.outcomes == done_before  # refused at submission: no failed job


def test_info_says_whether_the_model_takes_negative_prompts(
    server: Server, sd_lcm_lora_pipe: LCMPipeline
) -> None:
    assert call(server.url, "GET", "/api/info").json()["negative_prompt"] is False
    with Server(sd_lcm_lora_pipe, port=0, model="sd-lcm-lora") as served:
        assert call(served.url, "GET", "/api/info").json()["negative_prompt"] is True


def test_previews_and_vae_tiny_without_a_tiny_vae_are_refused(server: Server) -> None:
    for extra in ({"previews": True}, {"vae": "tiny"}):
        reply = call(server.url, "POST", "/api/jobs", {"prompt": "x", **SMALL, **extra})
        assert reply.status == 400 and "--tiny-vae" in reply.json()["error"]


def test_an_unknown_response_format_is_refused_with_400(server: Server) -> None:
    reply = call(server.url, "POST", "/api/generate?format=jpeg", {"prompt": "x", **SMALL})
    assert reply.status == 400
    assert reply.json()["error"] == "format: Input should be 'png' or 'json', got 'jpeg'"


@pytest.mark.parametrize("host", ["attacker.example:8000", "attacker.example", "[::2]:8000"])
def test_on_loopback_a_request_addressed_to_another_host_name_is_refused(
    server: Server, host: str
) -> None:
    for path in ("/", "/api/health", "/api/info"):
        reply = call(server.url, "GET", path, headers={"Host": host})
        assert (reply.status, reply.body) == (400, b"Invalid host header")
        assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert {name: reply.headers[name] for name in SECURITY_HEADERS} == SECURITY_HEADERS


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8000", "127.0.0.1:8000", "[::1]:8000"])
def test_on_loopback_a_request_addressed_to_this_machine_is_answered(
    server: Server, host: str
) -> None:
    assert call(server.url, "GET", "/api/info", headers={"Host": host}).status == 200


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-of-some-length", f"Basic {TOKEN}", f"Bearer {TOKEN}x"],
)
def test_with_a_token_the_api_refuses_a_missing_or_wrong_one_with_401(
    guarded: Server, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for method, path, body in (
        ("GET", "/api/info", None),
        ("POST", "/api/generate", {"prompt": "x", **SMALL}),
        ("POST", "/api/jobs", b"not even json"),
        ("GET", "/api/jobs/0123456789abcdef", None),
    ):
        reply = call(guarded.url, method, path, body, headers=headers)
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"] == "Bearer"
        assert "token" in reply.json()["error"]


def test_without_the_token_no_byte_of_the_body_is_read(guarded: Server) -> None:
    """A client that asks before sending its body (Expect: 100-continue) is refused at once: a
    server that read the body first would ask for it and wait."""
    address = urlsplit(guarded.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    connection.putrequest("POST", "/api/generate")
    for name, value in (
        ("Content-Type", "application/json"),
        ("Expect", "100-continue"),
        ("Content-Length", "1000"),  # within the limit
    ):
        connection.putheader(name, value)
    connection.endheaders()  # and no body
    reply = Reply(connection.getresponse())
    connection.close()
    assert (reply.status, reply.headers["WWW-Authenticate"]) == (401, "Bearer")


def test_the_openapi_document_declares_the_token_on_the_operations_that_need_it(
    server: Server, guarded: Server
) -> None:
    def security(running: Server) -> tuple[dict, dict[str, object]]:
        document = call(running.url, "GET", "/openapi.json").json()
        return document["components"].get("securitySchemes", {}), {
            f"{method.upper()} {path}": operation.get("security")
            for path, operations in document["paths"].items()
            for method, operation in operations.items()
        }

    schemes, operations = security(guarded)
    assert (schemes["HTTPBearer"]["type"], schemes["HTTPBearer"]["scheme"]) == ("http", "bearer")
    assert operations.pop("GET /api/health") is None
    assert {"POST /api/generate", "GET /api/jobs/{job_id}", "POST /v3/images/edits"} <= set(
        operations
    )
    assert all(value == [{"HTTPBearer": []}] for value in operations.values()), operations
    schemes, operations = security(server)
    assert schemes == {} and set(operations.values()) == {None}


def test_with_the_right_token_the_api_answers_and_the_page_needs_none(guarded: Server) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert call(guarded.url, "GET", "/api/info", headers=headers).status == 200
    reply = call(guarded.url, "POST", "/api/generate", {"prompt": "x", **SMALL}, headers=headers)
    assert reply.status == 200 and reply.json()["state"] == "done"
    assert call(guarded.url, "GET", "/").status == 200


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "refusing to bind to 0.0.0.0 without --token"),
        (["--token", "short"], "--token must be at least 16 printable ASCII characters"),
    ],
)
def test_the_cli_refuses_to_listen_beyond_loopback_without_a_long_token(
    tiny_ov_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("LCM_LITE_TOKEN", raising=False)
    assert cli_main(["serve", "--host", "0.0.0.0", *options, "--model", str(tiny_ov_dir)]) == 2
    assert message in capsys.readouterr().err


def test_the_server_class_refuses_to_listen_beyond_loopback_without_a_token(
    f32_pipe: LCMPipeline,
) -> None:
    with pytest.raises(UsageError, match="refusing to bind to 0.0.0.0"):
        Server(f32_pipe, host="0.0.0.0", port=0)


def test_without_the_serve_extra_serve_says_what_to_install_in_one_line() -> None:
    hide = "import sys; sys.modules.update(dict.fromkeys(['fastapi', 'uvicorn', 'multipart']))"
    run = "from lcm_lite.cli import main; sys.exit(main(['serve', '--port', '0']))"
    done = subprocess.run(
        [sys.executable, "-c", f"{hide}; {run}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert 'pip install "lcm-lite[serve]"' in done.stderr


def test_the_token_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LCM_LITE_TOKEN", TOKEN)
    assert serve_parser().parse_args([]).token == TOKEN
    assert serve_parser().parse_args(["--token", "x" * 16]).token == "x" * 16


def test_twenty_concurrent_requests_each_get_an_image_or_503_and_the_server_survives(
    server: Server,
) -> None:
    def request(seed: int) -> Reply:
        return call(
            server.url,
            "POST",
            "/api/generate",
            {"prompt": "a red cube", "seed": seed, **SLOW, "width": 64, "height": 64},
        )

    with ThreadPoolExecutor(max_workers=20) as pool:
        replies = list(pool.map(request, range(20)))
    statuses = [reply.status for reply in replies]
    assert set(statuses) == {200, 503}, statuses
    for seed, reply in enumerate(replies):
        if reply.status == 200:
            assert reply.json()["seed"] == seed and len(reply.json()["images"]) == 4
        else:
            assert int(reply.headers["Retry-After"]) >= 1
            assert "queue is full" in reply.json()["error"]
    assert call(server.url, "GET", "/api/health").status == 200
    assert call(server.url, "POST", "/api/generate", {"prompt": "x", **SMALL}).status == 200
    assert call(server.url, "GET", "/api/info").json()["queue"]["waiting"] == 0


class ServeProcess:
    """``python -m lcm_lite serve`` in a subprocess, for what only a process shows: signals."""

    def __init__(self, model: Path, queue_size: int = 1) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lcm_lite",
                "serve",
                "--model",
                str(model),
                "--port",
                "0",
                "--queue-size",
                str(queue_size),
                "--no-cache",
            ],
            cwd=REPO_ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.threads: list[threading.Thread] = []
        match = re.search(r"on (http://\S+)", first_line := self.process.stderr.readline())
        assert match, first_line
        self.url = match.group(1)

    def generate_in_background(self, prompt: str) -> list[Reply]:
        """Start a slow request; the list gets its reply once it comes."""
        replies: list[Reply] = []
        thread = threading.Thread(
            target=lambda: replies.append(
                call(self.url, "POST", "/api/generate", {"prompt": prompt, **SLOW})
            )
        )
        thread.start()
        self.threads.append(thread)
        return replies

    def wait_until(self, running: bool, waiting: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            queue = call(self.url, "GET", "/api/info").json()["queue"]
            if (queue["running"], queue["waiting"]) == (running, waiting):
                return
            time.sleep(0.02)
        raise AssertionError(f"the queue never reached running={running}, waiting={waiting}")

    def finish(self) -> tuple[int, str]:
        """Wait for the replies and the exit; the exit code and what was printed on stderr."""
        for thread in self.threads:
            thread.join(timeout=60)
        return self.process.wait(timeout=60), self.process.stderr.read()

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.mark.slow
def test_sigterm_finishes_the_running_job_refuses_the_queued_one_and_exits_0(
    tiny_ov_dir: Path,
) -> None:
    with ServeProcess(tiny_ov_dir) as serve:
        running = serve.generate_in_background("the job in flight")
        serve.wait_until(running=True, waiting=0)
        queued = serve.generate_in_background("a queued job")
        serve.wait_until(running=True, waiting=1)
        serve.process.send_signal(signal.SIGTERM)
        exit_code, stderr = serve.finish()
    assert exit_code == 0, stderr
    assert "stopping after the job in flight" in stderr
    assert running[0].status == 200 and len(running[0].json()["images"]) == 4
    assert (queued[0].status, queued[0].json()["error"]) == (503, "the server is shutting down")


def test_a_second_sigint_cancels_the_running_job_and_still_exits_0(tiny_ov_dir: Path) -> None:
    with ServeProcess(tiny_ov_dir) as serve:
        running = serve.generate_in_background("the job in flight")
        serve.wait_until(running=True, waiting=0)
        serve.process.send_signal(signal.SIGINT)
        assert "stopping after the job in flight" in serve.process.stderr.readline()
        serve.process.send_signal(signal.SIGINT)
        exit_code, stderr = serve.finish()
    assert exit_code == 0, stderr
    assert running[0].status == 503 and "cancelled" in running[0].json()["error"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"clip_skip": 3}, "clip_skip must be from 0 to 2 (this text encoder's layers), got 3"),
        ({"clip_skip": -1}, "clip_skip: Input should be greater than or equal to 0"),
        ({"prompt": "(x:1..4)", "prompt_weighting": True}, "prompt weight '1..4' is not a number"),
    ],
)
@pytest.mark.parametrize("path", ["/api/generate", "/api/jobs"])
def test_a_clip_skip_or_weight_the_model_cannot_take_is_refused_with_400(
    server: Server, fields: dict, message: str, path: str
) -> None:
    done_before = server.jobs.outcomes.copy()
    reply = call(server.url, "POST", path, {"prompt": "x", **SMALL, **fields})
    assert reply.status == 400 and message in reply.json()["error"]
    assert "\n" not in reply.json()["error"]
    assert server.jobs.outcomes == done_before
