"""Clients that are oversized, slow, stalled or hostile at the connection level, against a real
server on loopback (its ports only; every loop bounded in count and time): the answer reaches
Python's own client, requests and httpx; stalled bodies and connections are closed in bounded
time; hostile connections do not lock anyone out, nor flood the log. The figures are printed
(``pytest -s``)."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_server import REPO_ROOT, SMALL, TOKEN, ServeProcess

from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
from lcm_lite.server import running, security
from lcm_lite.server.app import MAX_PICTURE_BODY_BYTES
from lcm_lite.server.running import Server

httpx = pytest.importorskip("httpx")
psutil = pytest.importorskip("psutil")
requests = pytest.importorskip("requests")

MIB = 1024 * 1024
BOUNDARY = "lcm-lite-test-boundary"


@pytest.fixture()
def server(f32_pipe: LCMPipeline) -> Iterator[Server]:
    """A server of this test's own: its connections are this test's alone."""
    with Server(f32_pipe, port=0, capacity=2, model="tiny") as server:
        yield server


@pytest.fixture()
def guarded(f32_pipe: LCMPipeline) -> Iterator[Server]:
    with Server(f32_pipe, port=0, token=TOKEN, capacity=2, model="tiny") as server:
        yield server


def until(condition: Callable[[], bool], seconds: float) -> float:
    """Wait for ``condition`` (checked every 20 ms) at most ``seconds``; how long it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.02)
    return time.monotonic() - start


def served(server: Server) -> int:
    """How many connections the server side holds open: its sockets, seen by the system."""
    port = urlsplit(server.url).port
    return sum(
        1
        for connection in psutil.Process().net_connections("tcp")
        if connection.laddr
        and connection.laddr.port == port
        and connection.status != psutil.CONN_LISTEN
    )


def connect(url: str, source: str = "127.0.0.1") -> socket.socket:
    """A raw connection from ``source`` (any address of the loopback range)."""
    address = urlsplit(url)
    return socket.create_connection(
        (address.hostname, address.port), timeout=10, source_address=(source, 0)
    )


def head(path: str, fields: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", *(f"{k}: {v}" for k, v in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer_head(connection: socket.socket) -> bytes:
    """The bytes of an answer up to its blank line (and maybe some of its body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = connection.recv(65536)
        if not more:
            break
        data += more
    return data


def json_body(size: int) -> bytes:
    return b'{"prompt": "' + b"x" * size + b'"}'


def multipart(image: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na cat\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def with_urllib(url: str, body: bytes, kind: str, headers: dict[str, str]) -> tuple[int, dict]:
    content_type = (
        "application/json" if kind == "json" else f"multipart/form-data; boundary={BOUNDARY}"
    )
    data = body if kind == "json" else multipart(body)
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": content_type, **headers}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def with_requests(url: str, body: bytes, kind: str, headers: dict[str, str]) -> tuple[int, dict]:
    if kind == "json":
        headers = {"Content-Type": "application/json", **headers}
        answer = requests.post(url, data=body, headers=headers, timeout=60)
    else:
        files = {"image": ("big.png", body, "image/png")}
        answer = requests.post(
            url, data={"prompt": "a cat"}, files=files, headers=headers, timeout=60
        )
    return answer.status_code, answer.json()


def with_httpx(url: str, body: bytes, kind: str, headers: dict[str, str]) -> tuple[int, dict]:
    if kind == "json":
        headers = {"Content-Type": "application/json", **headers}
        answer = httpx.post(url, content=body, headers=headers, timeout=60)
    else:
        files = {"image": ("big.png", body, "image/png")}
        answer = httpx.post(url, data={"prompt": "a cat"}, files=files, headers=headers, timeout=60)
    return answer.status_code, answer.json()


CLIENTS = {"urllib": with_urllib, "requests": with_requests, "httpx": with_httpx}
OVERSIZED = {  # the cases (a path, its body's kind and size), above the picture limit
    "json-30MiB-generate": ("/api/generate", "json", 30 * MIB),
    "json-24MiB-jobs": ("/api/jobs", "json", 24 * MIB),
    "multipart-50MiB-edits": ("/v1/images/edits", "multipart", 50 * MIB),
}
assert all(size > MAX_PICTURE_BODY_BYTES for _, _, size in OVERSIZED.values())


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", OVERSIZED)
def test_an_oversized_body_gets_a_413_that_each_client_reads(
    server: Server, client: str, case: str
) -> None:
    """The server answers at once, then reads and drops the rest before closing (a lingering
    close): without it, urllib (which says Connection: close) got a connection reset."""
    path, kind, size = OVERSIZED[case]
    body = json_body(size) if kind == "json" else b"\x89PNG" + b"\0" * size
    start = time.perf_counter()
    status, answer = CLIENTS[client](server.url.rstrip("/") + path, body, kind, {})
    seconds = time.perf_counter() - start
    print(f"\n{client}, {case}: {status} in {seconds:.2f} s")
    assert status == 413 and "at most" in json.dumps(answer)
    assert requests.get(server.url + "api/health", timeout=10).status_code == 200
    until(lambda: served(server) == 0, running.LINGER_IDLE_SECONDS + 5)


@pytest.mark.parametrize("client", CLIENTS)
def test_without_the_token_a_large_body_gets_a_401_that_each_client_reads(
    guarded: Server, client: str
) -> None:
    url = guarded.url + "api/generate"
    status, answer = CLIENTS[client](url, json_body(5 * MIB), "json", {})
    assert status == 401 and "token" in answer["error"]


def test_a_client_that_never_stops_sending_is_cut_off_within_the_linger_bounds(
    server: Server,
) -> None:
    connection = connect(server.url)
    declared = 1 << 40
    connection.sendall(head("/api/generate", {"Content-Length": str(declared)}))
    answer = read_answer_head(connection)
    assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()
    chunk, sent, start = b"\0" * MIB, 0, time.monotonic()
    deadline = start + running.LINGER_SECONDS + 10
    try:
        while time.monotonic() < deadline and sent < declared:
            connection.sendall(chunk)
            sent += len(chunk)
    except OSError:  # reset: the server closed
        pass
    seconds = time.monotonic() - start
    connection.close()
    print(f"\na client that never stops: cut off after {sent / MIB:.0f} MiB, {seconds:.2f} s")
    assert sent <= running.LINGER_BYTES + 16 * MIB  # what the socket buffers may hold besides
    assert seconds < running.LINGER_SECONDS + 5
    assert requests.get(server.url + "api/health", timeout=10).status_code == 200


def test_a_client_that_trickles_after_an_early_answer_is_closed_at_the_linger_deadline(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(running, "LINGER_SECONDS", 3)
    connection = connect(server.url)
    connection.sendall(head("/api/generate", {"Content-Length": str(1 << 40)}))
    assert read_answer_head(connection).startswith(b"HTTP/1.1 413")
    start = time.monotonic()
    while time.monotonic() - start < 20:  # a byte every half second, until cut off
        try:
            connection.send(b"x")
        except OSError:
            break
        with contextlib.suppress(AssertionError):
            until(lambda: served(server) == 0, 0.5)
            break
    seconds = time.monotonic() - start
    connection.close()
    print(f"\na trickling client: closed after {seconds:.2f} s")
    assert seconds < running.LINGER_SECONDS + 2


@pytest.mark.parametrize(
    ("fields", "first_bytes"),
    [
        ({"Content-Type": "application/json", "Content-Length": "1000"}, b'{"prompt": '),
        (  # a chunk that says 256 MiB, and sends 1 KiB of it
            {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            b"10000000\r\n" + b"x" * 1024,
        ),
    ],
    ids=["content-length", "huge-chunk"],
)
def test_a_stalled_body_gets_a_408_and_its_connection_is_closed(
    server: Server, monkeypatch: pytest.MonkeyPatch, fields: dict[str, str], first_bytes: bytes
) -> None:
    monkeypatch.setattr(security, "BODY_IDLE_SECONDS", 1.0)
    connection = connect(server.url)
    start = time.monotonic()
    connection.sendall(head("/api/generate", fields) + first_bytes)  # and no more
    answer = read_answer_head(connection)
    answered = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer.lower()
    closed = until(lambda: served(server) == 0, 10) + answered
    connection.close()
    print(f"\nstalled body: 408 after {answered:.2f} s, connection closed after {closed:.2f} s")
    assert answered < security.BODY_IDLE_SECONDS + 2
    assert closed < security.BODY_IDLE_SECONDS + running.LINGER_IDLE_SECONDS + 2


def test_a_body_sent_after_a_401_does_not_keep_the_connection(guarded: Server) -> None:
    """The issue's case: a POST head without the token, its 401, then one byte of body."""
    connection = connect(guarded.url)
    connection.sendall(head("/api/generate", {"Content-Length": "1000"}))
    start = time.monotonic()
    answer = read_answer_head(connection)
    assert answer.startswith(b"HTTP/1.1 401") and b"connection: close" in answer.lower()
    connection.sendall(b"{")
    closed = until(lambda: served(guarded) == 0, 10)
    connection.close()
    print(f"\nafter a 401, one byte of body: closed after {time.monotonic() - start:.2f} s")
    assert closed < running.LINGER_IDLE_SECONDS + 2


def hostile(url: str, sources: list[str], count: int) -> list[socket.socket]:
    """``count`` connections spread over ``sources``, each a POST head without the token, then
    one byte of body after its 401 (unread), all left open."""
    opened = []
    for index in range(count):
        connection = connect(url, sources[index % len(sources)])
        connection.sendall(head("/api/generate", {"Content-Length": "1000"}) + b"{")
        opened.append(connection)
    return opened


@pytest.mark.parametrize("sources", [["127.0.0.1"], [f"127.0.0.{n}" for n in range(2, 12)]])
def test_hostile_connections_do_not_lock_out_a_health_check_or_an_authorised_generation(
    guarded: Server, caplog: pytest.LogCaptureFixture, sources: list[str]
) -> None:
    count = 600
    start = time.perf_counter()
    opened = hostile(guarded.url, sources, count)
    opening = time.perf_counter() - start
    try:
        start = time.perf_counter()
        assert requests.get(guarded.url + "api/health", timeout=10).status_code == 200
        health = time.perf_counter() - start
        start = time.perf_counter()
        answer = httpx.post(
            guarded.url + "api/generate",
            json={"prompt": "x", **SMALL},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        generation = time.perf_counter() - start
        assert answer.status_code == 200 and answer.json()["state"] == "done"
        held = served(guarded)
    finally:
        for connection in opened:
            connection.close()
    print(
        f"\n{count} hostile connections from {len(sources)} address(es) opened in "
        f"{opening:.2f} s, {held} open on the server: health in {health * 1000:.0f} ms, "
        f"a 64x64 image in {generation:.2f} s"
    )
    bound = running.MAX_CONNECTIONS_PER_CLIENT * len(sources)
    assert held <= bound + 1  # and this test's own client's
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) <= 3, [record.getMessage() for record in warnings]


def test_at_a_file_limit_of_256_hostile_connections_neither_lock_out_nor_flood_the_log(
    tiny_ov_dir: Path,
) -> None:
    """The issue's figures: ``serve`` under ``ulimit -n 256``, 400 hostile connections from 10
    addresses held open; the health check answers and stderr stays a few lines."""

    def file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    process = subprocess.Popen(
        [sys.executable, "-m", "lcm_lite", "serve", "--model", str(tiny_ov_dir), "--port", "0"]
        + ["--no-cache", "--token", TOKEN],
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=file_limit,
    )
    try:
        match = re.search(r"on (http://\S+)", first_line := process.stderr.readline())
        assert match, first_line
        url = match.group(1)
        opened = hostile(url, [f"127.0.0.{n}" for n in range(2, 12)], 400)
        try:
            start = time.perf_counter()
            health = requests.get(url + "api/health", timeout=10)
            seconds = time.perf_counter() - start
            assert health.status_code == 200
            answer = httpx.post(
                url + "api/generate",
                json={"prompt": "x", **SMALL},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=30,
            )
            assert answer.status_code == 200
        finally:
            for connection in opened:
                connection.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        stderr = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    print(
        f"\nulimit -n 256, 400 hostile connections: health in {seconds * 1000:.0f} ms; "
        f"stderr {len(stderr)} bytes"
    )
    assert "Traceback" not in stderr and stderr.count("\n") <= 5, stderr[:2000]


def test_sigterm_with_a_keep_alive_connection_open_exits_0_without_a_traceback(
    tiny_ov_dir: Path,
) -> None:
    with ServeProcess(tiny_ov_dir) as serve:
        with httpx.Client(timeout=10) as client:  # keeps its connection open between requests
            assert client.get(serve.url + "api/health").status_code == 200
            stalled = connect(serve.url)  # and a request whose body never comes
            stalled.sendall(head("/api/generate", {"Content-Length": "1000"}) + b"{")
            serve.process.send_signal(signal.SIGTERM)
            exit_code, stderr = serve.finish()
        answer = read_answer_head(stalled)
        stalled.close()
    assert exit_code == 0, stderr
    assert "Traceback" not in stderr and "CancelledError" not in stderr, stderr
    assert answer.startswith((b"HTTP/1.1 408", b"HTTP/1.1 503")), answer
