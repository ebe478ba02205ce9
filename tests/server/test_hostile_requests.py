"""Hostile requests (issue 24) against a real ``lcm-lite serve`` on loopback, with the tiny model:
small files that decode to gigabytes, clients that hang up mid-job, and web pages of other
origins posting forms. Memory is measured (the server runs in this process: its RSS is ours) over
bounded loops of requests, and must stay within a fixed bound."""

from __future__ import annotations

import base64
import gc
import http.client
import io
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

import pytest
from PIL import Image

from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
from lcm_lite.server.jobs import Job
from lcm_lite.server.running import Server

psutil = pytest.importorskip("psutil")
openai = pytest.importorskip("openai")

HOSTILE_REQUESTS = 12  # the count: 0.3 -> 3.7 GB before the fix
HANG_UPS = 4
RSS_BOUND = 64 * 2**20  # growth allowed, at the peak and after: a third of one decoded picture
DEADLINE_SECONDS = 60


@pytest.fixture(scope="module")
def server(f32_pipe: LCMPipeline) -> Iterator[Server]:
    with Server(f32_pipe, port=0, capacity=2, model="tiny") as server:
        yield server


def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}v1", api_key="unused", max_retries=0)


def black_png(width: int, height: int) -> bytes:
    """A PNG of black pixels: a few hundred bytes per megapixel, gigabytes once decoded."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def noise_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((width, height), 60).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(fields: Mapping[str, str], picture: bytes) -> tuple[bytes, str]:
    """An HTML form's body, as a browser posts it: the fields and the ``image`` file."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + picture
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), boundary


def post(
    server: Server, path: str, body: bytes, content_type: str, headers: Mapping[str, str] = {}
) -> tuple[int, dict]:
    """POST with urllib; the status and the JSON answer, errors included."""
    request = urllib.request.Request(
        f"{server.url}{path.lstrip('/')}",
        data=body,
        headers={"Content-Type": content_type, **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE_SECONDS) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        with refused:
            return refused.code, json.loads(refused.read())


def rss() -> int:
    """This process's resident memory (the server's: it runs in a thread of this process), once
    the garbage is collected."""
    gc.collect()
    return psutil.Process().memory_info().rss


class PeakRss:
    """The largest RSS seen while the block runs, sampled every few milliseconds by a thread
    (stopped by an event when the block ends)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.peak = psutil.Process().memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=DEADLINE_SECONDS)


def total_jobs(server: Server) -> int:
    """Jobs accepted since the server started (the last one's outcome may still be counting)."""
    return server.jobs.submitted


def test_pictures_that_decode_to_gigabytes_are_refused_from_the_header_in_bounded_memory(
    server: Server, record_property: pytest.RecordProperty
) -> None:
    huge, large = black_png(8000, 8000), black_png(4000, 4000)  # the issue's: 64 megapixels
    assert len(huge) < 1024 * 1024
    client(server).images.edit(  # a first edit: the model's image-to-image parts compiled
        image=("start.png", noise_png(80, 72), "image/png"),
        prompt="x",
        extra_body={"num_inference_steps": 1},
    )
    hostile = [  # (picture, size, what the refusal says)
        (huge, None, "(8000x8000) has more than the 16 megapixels"),
        (huge, "512x512", "(8000x8000) has more than the 16 megapixels"),  # the image fits
        (large, None, "makes a 4000x4000 image, larger than 1024 pixels a side"),
    ]
    jobs_before, before = total_jobs(server), rss()
    messages = []
    with PeakRss() as sampled:
        for index in range(HOSTILE_REQUESTS):
            picture, size, _ = hostile[index % len(hostile)]
            with pytest.raises(openai.BadRequestError) as refused:
                client(server).images.edit(
                    image=("black.png", picture, "image/png"),
                    prompt="x",
                    n=4,
                    **({"size": size} if size else {}),
                )
            messages.append(refused.value.message)
    after = rss()
    for name, value in (("before", before), ("peak", sampled.peak), ("after", after)):
        record_property(f"rss_{name}_mb", round(value / 2**20))
    print(
        f"\n{HOSTILE_REQUESTS} hostile edits: RSS {before / 2**20:.0f} MB, peak "
        f"{sampled.peak / 2**20:.0f} MB, after {after / 2**20:.0f} MB"
    )
    assert sampled.peak - before < RSS_BOUND  # nothing decoded
    assert after - before < RSS_BOUND
    for index, message in enumerate(messages):
        assert hostile[index % len(hostile)][2] in message
    assert total_jobs(server) == jobs_before  # refused at the door: no job


def test_the_own_api_refuses_such_a_picture_from_its_header_too(server: Server) -> None:
    jobs_before = total_jobs(server)
    body = {"prompt": "x", "image": base64.b64encode(black_png(4000, 4000)).decode(), "steps": 1}
    status, answer = post(server, "/api/jobs", json.dumps(body).encode(), "application/json")
    assert status == 400 and "larger than 1024 pixels a side" in answer["error"]
    body["image"] = base64.b64encode(black_png(8000, 8000)).decode()
    body["width"] = body["height"] = 64
    status, answer = post(server, "/api/jobs", json.dumps(body).encode(), "application/json")
    assert status == 400 and "more than the 16 megapixels" in answer["error"]
    assert total_jobs(server) == jobs_before


def running_job(server: Server) -> Job:
    """The job the server runs, once it has done a step (polled until a deadline); not one that
    has stopped (the worker clears ``running`` just after a job's outcome is out)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (job := server.jobs.running) is None or job.step == 0 or job.outcome.done():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.01)
    return job


def hang_up_mid_edit(server: Server, picture: bytes) -> Job:
    """Post a large edit, hang up once it runs, and return its job once it has stopped."""
    body, boundary = multipart(
        {"prompt": "a long job", "size": "512x512", "n": "4", "num_inference_steps": "8"},
        picture,
    )
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        connection.request(
            "POST",
            "/v1/images/edits",
            body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        job = running_job(server)
    finally:
        connection.close()  # the client hangs up
    job.outcome.exception(timeout=DEADLINE_SECONDS)  # waits until the job has stopped
    return job


def test_edits_whose_clients_hang_up_are_cancelled_and_keep_neither_picture_nor_memory(
    server: Server, record_property: pytest.RecordProperty
) -> None:
    picture = noise_png(512, 512)
    hang_up_mid_edit(server, picture)  # a first one: the 512 x 512 buffers allocated
    before = rss()
    for _ in range(HANG_UPS):
        job = hang_up_mid_edit(server, picture)
        assert job.cancelled and job.state == "failed", job.state
        assert job.step < 8  # stopped mid-job
        assert job.request.image is None  # the kept job does not hold the picture
        assert job.error is not None and job.error.__traceback__ is None
    after = rss()
    record_property("rss_before_mb", round(before / 2**20))
    record_property("rss_after_mb", round(after / 2**20))
    print(
        f"\n{HANG_UPS} edits hung up mid-job: RSS {before / 2**20:.0f} MB -> "
        f"{after / 2**20:.0f} MB ({(after - before) / 2**20:+.0f} MB)"
    )
    assert after - before < RSS_BOUND


FOREIGN = [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},  # a sandboxed frame, a file: page
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
]


@pytest.mark.parametrize("headers", FOREIGN)
def test_a_form_posted_by_another_sites_page_is_refused_with_403(
    server: Server, headers: dict[str, str]
) -> None:
    jobs_before = total_jobs(server)
    body, boundary = multipart({"prompt": "x", "size": "1024x1024", "n": "4"}, noise_png(80, 72))
    status, answer = post(
        server, "/v1/images/edits", body, f"multipart/form-data; boundary={boundary}", headers
    )
    assert status == 403, answer
    assert "is refused: call the API from the server's own page" in answer["error"]["message"]
    assert total_jobs(server) == jobs_before


def test_another_port_on_the_same_host_is_another_origin(server: Server) -> None:
    port = urlsplit(server.url).port
    other = {"Origin": f"http://127.0.0.1:{port + 1}", "Sec-Fetch-Site": "same-site"}
    status, _ = post(server, "/api/jobs", b"{}", "application/json", other)
    assert status == 403
    status, _ = post(server, "/api/jobs", b"{}", "application/json", {"Origin": other["Origin"]})
    assert status == 403


@pytest.mark.parametrize(
    "headers",
    [
        {},  # scripts, curl, the openai client: no Origin
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        "own origin",
    ],
)
def test_requests_from_the_servers_own_page_or_without_origin_are_served(
    server: Server, headers: dict[str, str] | str
) -> None:
    if headers == "own origin":
        headers = {"Origin": server.url.rstrip("/"), "Sec-Fetch-Site": "same-origin"}
    body = {"prompt": "x", "width": 64, "height": 64, "steps": 1}
    status, answer = post(
        server, "/api/generate", json.dumps(body).encode(), "application/json", headers
    )
    assert status == 200, answer
    assert len(answer["images"]) == 1


def test_reading_is_not_refused_whatever_the_origin(server: Server) -> None:
    request = urllib.request.Request(
        f"{server.url}api/health", headers={"Origin": "http://evil.example"}
    )
    with urllib.request.urlopen(request, timeout=DEADLINE_SECONDS) as answer:
        assert answer.status == 200
