"""``lcm-lite serve``: the demo page at ``/`` and a JSON API, on the standard library's HTTP server.

    GET  /                 the page (and /app.js, /style.css beside it)
    GET  /api/health       {"status": "ok"}; never needs the token
    GET  /api/info         model, device, limits, defaults, queue
    POST /api/generate     a request; answers when done: JSON with base64 PNGs, or the PNG itself
    POST /api/jobs         the same request, answered at once (202) with the job's id
    GET  /api/jobs/<id>    a job's state and steps done; its images once done

Generation is serialised by :class:`~lcm_lite.jobs.JobQueue`; a full queue answers 503 with
``Retry-After``. Safe on a LAN: loopback unless told otherwise, and never elsewhere without a
bearer token; bodies, sizes, steps and images are bounded; requests name no files.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hmac
import importlib.resources
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from . import __version__
from .errors import Cancelled, UsageError
from .jobs import Job, JobQueue, QueueFull, Request
from .options import PROG, Parser, configure_logging, integer, model_options, open_pipeline
from .pipeline import DEFAULT_SIZE, check_arguments

if TYPE_CHECKING:
    from .pipeline import LCMPipeline

log = logging.getLogger("lcm_lite.server")

MAX_BODY_BYTES = 64 * 1024
MAX_PROMPT_CHARS = 1000
MIN_TOKEN_CHARS = 16
INTEGER_LIMITS = {
    "width": (64, 1024, 8),
    "height": (64, 1024, 8),
    "steps": (1, 8, 1),
    "num_images": (1, 4, 1),
}  # name: (min, max, multiple of)
GUIDANCE_LIMITS = (0.0, 20.0)
SEED_LIMIT = 2**64
FIELDS = ("prompt", "seed", "width", "height", "guidance", "steps", "num_images")
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_JOB_PATH = re.compile(r"/api/jobs/([0-9a-f]{16})")
_DISCARD_LIMIT = 1024 * 1024


class HttpError(Exception):
    """An answer other than success: its status, a one-line message and any extra headers."""

    def __init__(
        self, status: HTTPStatus, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def parse_request(data: object, defaults: Mapping[str, int | float]) -> Request:
    """A generation request from decoded JSON, checked against the limits above; a missing field
    takes its default, a missing or null seed a random one below 2**53 (exact in JavaScript)."""
    if not isinstance(data, dict):
        raise UsageError('the body must be a JSON object, e.g. {"prompt": "a red cube"}')
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise UsageError(f"unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS)}")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UsageError("prompt must be a non-empty string")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UsageError(f"prompt must be at most {MAX_PROMPT_CHARS} characters, got {len(prompt)}")
    integers = {
        name: _integer(name, data.get(name, defaults[name]), *limits)
        for name, limits in INTEGER_LIMITS.items()
    }
    seed = data.get("seed")
    seed = secrets.randbits(53) if seed is None else _integer("seed", seed, 0, SEED_LIMIT - 1)
    request = Request(
        prompt=prompt,
        seed=seed,
        guidance=_guidance(data.get("guidance", defaults["guidance"])),
        **integers,
    )
    check_arguments(  # the pipeline's own checks (NUL, UTF-8), now rather than in the worker
        [prompt], request.steps, request.guidance, request.width, request.height, request.num_images
    )
    return request


def _integer(name: str, value: object, low: int, high: int, multiple: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UsageError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    if value % multiple:
        raise UsageError(f"{name} must be a multiple of {multiple}, got {value}")
    return value


def _guidance(value: object) -> float:
    low, high = GUIDANCE_LIMITS
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise UsageError(f"guidance must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address, as given to --host) names this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token, and refuse tokens that are easy to guess
    or that an HTTP header cannot carry."""
    if token is not None and (
        len(token) < MIN_TOKEN_CHARS
        or not token.isascii()
        or not token.isprintable()
        or " " in token
    ):
        raise UsageError(
            f"--token must be at least {MIN_TOKEN_CHARS} printable ASCII characters "
            "without spaces; make one with: python -c "
            "'import secrets; print(secrets.token_urlsafe())'"
        )
    if token is None and not is_loopback(host):
        raise UsageError(
            f"refusing to bind to {host} without --token: anyone on the network "
            "could use this machine; pass --token (or $LCM_LITE_TOKEN) or bind to "
            "127.0.0.1"
        )


class Server(ThreadingHTTPServer):
    """The HTTP server, its job queue and its page. ``start()`` serves in a thread; ``close()``
    stops accepting, fails the queued jobs, finishes the running one and answers it."""

    daemon_threads = False  # so that close() waits for every answer in flight
    request_queue_size = 64  # the listen backlog; the default 5 resets clients in a burst

    def __init__(
        self,
        pipe: LCMPipeline,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        token: str | None = None,
        capacity: int = 4,
        model: str = "",
    ) -> None:
        check_bind(host, token)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            super().__init__((host.strip("[]"), port), _Handler)
        except OSError as error:
            raise UsageError(f"cannot listen on {host} port {port}: {error.strerror}") from None
        self.token = token
        self.loopback_only = is_loopback(host)
        self.model = model
        self.device = pipe.compiler.device
        self.native_size = pipe.folder.default_size
        self.jobs = JobQueue(pipe, model, capacity=capacity)
        self.static = {
            path: (
                (importlib.resources.files("lcm_lite") / "static" / name).read_bytes(),
                content_type,
            )
            for path, (name, content_type) in STATIC_FILES.items()
        }
        self._thread = threading.Thread(
            target=self.serve_forever, name="lcm-lite-http", daemon=True
        )

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # not HTTPServer's: its getfqdn() may hang on DNS
        self.server_name, self.server_port = self.server_address[:2]

    @property
    def url(self) -> str:
        host = self.server_address[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.server_port}/"

    def defaults(self) -> dict[str, int | float]:
        return {
            "width": DEFAULT_SIZE,
            "height": DEFAULT_SIZE,
            "steps": 4,
            "guidance": 8.0,
            "num_images": 1,
        }

    def info(self) -> dict[str, object]:
        integer_limits = {
            name: {"min": low, "max": high, "multiple_of": multiple}
            for name, (low, high, multiple) in INTEGER_LIMITS.items()
        }
        return {
            "model": self.model,
            "device": self.device,
            "version": __version__,
            "native_size": self.native_size,
            "defaults": self.defaults(),
            "limits": {
                **integer_limits,
                "guidance": {"min": GUIDANCE_LIMITS[0], "max": GUIDANCE_LIMITS[1]},
                "seed": {"min": 0, "max": SEED_LIMIT - 1},
                "prompt_chars": MAX_PROMPT_CHARS,
                "body_bytes": MAX_BODY_BYTES,
            },
            "queue": {
                "capacity": self.jobs.capacity,
                "waiting": self.jobs.waiting,
                "running": self.jobs.running is not None,
            },
        }

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.shutdown()
        self.jobs.close()
        self.server_close()
        self._thread.join()

    def __enter__(self) -> Server:
        """``with Server(...) as server:`` serves in the block and closes after it."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def job_json(job: Job) -> dict[str, object]:
    """A job as the API shows it: the request, the steps done and, once finished, the outcome."""
    state = job.state  # read once: the worker may move it on meanwhile
    shown: dict[str, object] = {
        "id": job.id,
        "state": state,
        "step": job.step,
        **dataclasses.asdict(job.request),
    }
    if state == "done":
        shown.update(
            seconds=round(job.seconds, 3),
            timings={key: round(value, 4) for key, value in job.timings.items()},
            images=[
                {"index": index, "png_base64": base64.b64encode(png).decode()}
                for index, png in enumerate(job.images)
            ],
        )
    elif state == "failed":
        shown["error"] = str(job.error)
    return shown


def _job_failure(job: Job) -> HttpError:
    status = {Cancelled: HTTPStatus.SERVICE_UNAVAILABLE, UsageError: HTTPStatus.BAD_REQUEST}.get(
        type(job.error), HTTPStatus.INTERNAL_SERVER_ERROR
    )
    return HttpError(status, str(job.error))


class _Handler(BaseHTTPRequestHandler):
    """Routes, checks (Host, token, body) and answers; one connection, one request."""

    server: Server
    protocol_version = "HTTP/1.1"  # for Expect: 100-continue; every answer closes the connection
    server_version = f"lcm-lite/{__version__}"
    timeout = 10  # seconds a client may take to send its request

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def handle_expect_100(self) -> bool:
        """Refuse an oversized body before the client sends it (curl asks first above 1 KiB)."""
        if self._declared_length() > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_error(self._too_large())
            return False
        return super().handle_expect_100()

    def version_string(self) -> str:
        return self.server_version  # not the Python version

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _handle(self, method: str) -> None:
        self.close_connection = True
        try:
            self._check_host()
            self._route(method, urlsplit(self.path).path)()
        except HttpError as error:
            self._send_error(error)

    def _route(self, method: str, path: str) -> Callable[[], None]:
        if path in self.server.static:
            routes = {"GET": self._static}
        elif match := _JOB_PATH.fullmatch(path):
            routes = {"GET": lambda: self._job(match.group(1))}
        else:
            routes = {
                "/api/health": {"GET": self._health},
                "/api/info": {"GET": self._info},
                "/api/generate": {"POST": self._generate},
                "/api/jobs": {"POST": self._submit},
            }.get(path, {})
        if not routes:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        if method not in routes:
            raise HttpError(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{path} accepts {', '.join(routes)}",
                {"Allow": ", ".join(routes)},
            )
        if path.startswith("/api/") and path != "/api/health":
            self._check_token()
        return routes[method]

    def _static(self) -> None:
        body, content_type = self.server.static[urlsplit(self.path).path]
        self._send(HTTPStatus.OK, body, content_type)

    def _health(self) -> None:
        self._send_json(HTTPStatus.OK, {"status": "ok"})

    def _info(self) -> None:
        self._send_json(HTTPStatus.OK, self.server.info())

    def _generate(self) -> None:
        as_png = self._wants_png()
        job = self._submit_job()
        job.finished.wait()
        if job.state == "failed":
            raise _job_failure(job)
        if as_png:
            self._send(
                HTTPStatus.OK,
                job.images[0],
                "image/png",
                {"X-Seed": str(job.request.seed), "X-Job-Id": job.id},
            )
        else:
            self._send_json(HTTPStatus.OK, job_json(job))

    def _submit(self) -> None:
        job = self._submit_job()
        self._send_json(HTTPStatus.ACCEPTED, job_json(job), {"Location": f"/api/jobs/{job.id}"})

    def _job(self, job_id: str) -> None:
        job = self.server.jobs.get(job_id)
        if job is None:
            raise HttpError(
                HTTPStatus.NOT_FOUND,
                f"no such job: {job_id} (finished jobs are kept for a while, then forgotten)",
            )
        self._send_json(HTTPStatus.OK, job_json(job))

    def _submit_job(self) -> Job:
        try:
            return self.server.jobs.submit(parse_request(self._read_json(), self.server.defaults()))
        except UsageError as error:
            raise HttpError(HTTPStatus.BAD_REQUEST, str(error)) from None
        except QueueFull as error:
            raise HttpError(
                HTTPStatus.SERVICE_UNAVAILABLE, str(error), {"Retry-After": str(error.retry_after)}
            ) from None
        except Cancelled as error:
            raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, str(error)) from None

    def _wants_png(self) -> bool:
        formats = parse_qs(urlsplit(self.path).query).get("format", [])
        if any(name not in ("png", "json") for name in formats):
            raise HttpError(HTTPStatus.BAD_REQUEST, "format must be png or json")
        if formats:
            return formats[-1] == "png"
        return "image/png" in self.headers.get("Accept", "")

    def _check_host(self) -> None:
        """Behind a loopback address, answer only requests addressed to it: a web page that
        re-points its own name at 127.0.0.1 (DNS rebinding) cannot reach the API."""
        host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        if self.server.loopback_only and not is_loopback(host):
            raise HttpError(
                HTTPStatus.FORBIDDEN,
                "this server answers only requests addressed to localhost (check the Host header)",
            )

    def _check_token(self) -> None:
        if self.server.token is None:
            return
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.server.token.encode()
        ):
            raise HttpError(
                HTTPStatus.UNAUTHORIZED,
                "missing or wrong token: send the header Authorization: Bearer <token>",
                {"WWW-Authenticate": "Bearer"},
            )

    def _read_json(self) -> object:
        """The body as JSON: Content-Type application/json (so that a foreign web page cannot
        post it without the browser asking first), a Content-Length, at most MAX_BODY_BYTES."""
        if self.headers.get_content_type() != "application/json":
            raise HttpError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json",
            )
        if "Transfer-Encoding" in self.headers or "Content-Length" not in self.headers:
            raise HttpError(
                HTTPStatus.LENGTH_REQUIRED,
                "send a Content-Length header (chunked bodies are not accepted)",
            )
        length = self._declared_length()
        if length < 0:
            raise HttpError(HTTPStatus.BAD_REQUEST, "Content-Length must be a number of bytes")
        if length > MAX_BODY_BYTES:
            self._discard(length)
            raise self._too_large()
        try:
            return json.loads(self.rfile.read(length))
        except TimeoutError:
            raise HttpError(HTTPStatus.REQUEST_TIMEOUT, "the body did not arrive in time") from None
        except ValueError as error:
            raise HttpError(
                HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {error}"
            ) from None

    def _declared_length(self) -> int:
        text = self.headers.get("Content-Length", "0").strip()
        return int(text) if text.isdigit() else -1

    def _discard(self, length: int) -> None:
        """Read (up to a bound) what the client sends before answering it: closing a socket
        with unread data resets the connection, and the client would never see our answer."""
        remaining = min(length, _DISCARD_LIMIT)
        while remaining > 0 and (chunk := self.rfile.read(min(remaining, 65536))):
            remaining -= len(chunk)

    @staticmethod
    def _too_large() -> HttpError:
        return HttpError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body must be at most {MAX_BODY_BYTES} bytes"
        )

    def _send_error(self, error: HttpError) -> None:
        self._send_json(error.status, {"error": error.message}, error.headers)

    def _send_json(
        self, status: HTTPStatus, data: object, headers: Mapping[str, str] | None = None
    ) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", headers)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        for name, value in {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "Connection": "close",
            **SECURITY_HEADERS,
            **(headers or {}),
        }.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _StopOnSignal:
    """SIGINT/SIGTERM handler: the first asks the server to stop once the running job is done,
    a second cancels that job. Only sets flags: safe whatever the main thread was doing."""

    def __init__(self, jobs: JobQueue) -> None:
        self.jobs = jobs
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            self.jobs.cancel_running()
        self.requested = True


def serve_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{PROG} serve",
        description='Serve the demo page at / and a JSON API (README: "Serve").',
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; any other needs --token)",
    )
    parser.add_argument(
        "--port",
        type=integer,
        default=8000,
        help="TCP port (default 8000; 0 picks a free one)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("LCM_LITE_TOKEN"),
        help="bearer token every API client must send (default: $LCM_LITE_TOKEN)",
    )
    parser.add_argument(
        "--queue-size",
        type=integer,
        default=4,
        help="requests that may wait while one runs; more get 503 (default 4)",
    )
    model_options(parser)
    return parser


def main(argv: list[str]) -> int:
    """Serve until SIGINT or SIGTERM, then finish the job in flight and return 0."""
    args = serve_parser().parse_args(argv)
    check_bind(args.host, args.token)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be from 0 to 65535, got {args.port}")
    if args.queue_size < 1:
        raise UsageError(f"--queue-size must be at least 1, got {args.queue_size}")
    configure_logging(args.quiet)
    pipe = open_pipeline(args, keep_models=True)
    server = Server(
        pipe,
        host=args.host,
        port=args.port,
        token=args.token,
        capacity=args.queue_size,
        model=_model_label(args.model),
    )
    stop = _StopOnSignal(server.jobs)
    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with server:
            print(
                f"{PROG}: serving {server.model} on {server.url} (Ctrl+C stops)",
                file=sys.stderr,
                flush=True,
            )
            while not stop.requested:
                time.sleep(0.1)
            print(
                f"{PROG}: stopping after the job in flight (Ctrl+C again cancels it)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _model_label(model: str | None) -> str:
    """The model's name for /api/info and the PNG metadata: a hub id, or a folder's own name
    (its full path stays private)."""
    from .hub import DEFAULT_MODEL

    if model is None:
        return DEFAULT_MODEL
    path = Path(model).expanduser()
    return path.resolve().name if path.is_dir() else model
