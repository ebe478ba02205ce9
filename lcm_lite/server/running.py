"""A running server: the app on uvicorn, in a thread of this process, around one job queue."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import TYPE_CHECKING

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from lcm_lite import __version__
from lcm_lite.errors import UsageError
from lcm_lite.server.app import create_app
from lcm_lite.server.jobs import JobQueue
from lcm_lite.server.schemas import INTEGER_LIMITS
from lcm_lite.server.security import check_bind, is_loopback

if TYPE_CHECKING:
    from lcm_lite.pipeline.lcm_pipeline import LCMPipeline

GRACEFUL_SHUTDOWN_SECONDS = 10  # for the answers in flight once the last job is done
REQUEST_HEAD_SECONDS = 10  # a connection that has not sent a whole request head by then is closed
START_TIMEOUT_SECONDS = 30


class Server:
    """``lcm-lite serve`` inside a program: ``with Server(pipe, port=0) as server:`` serves at
    ``server.url`` in the block. ``close()`` refuses new jobs, fails the queued ones, finishes
    the running one, answers it, then stops."""

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
        self._socket = _listen(host, port)
        self.model = model
        self.jobs = JobQueue(pipe, model, capacity=capacity, max_side=INTEGER_LIMITS["width"][1])
        app = create_app(
            self.jobs,
            model=model,
            device=pipe.compiler.device,
            native_size=pipe.folder.default_size,
            has_previews=pipe.has_previews,
            takes_negative_prompts=pipe.takes_negative_prompts,
            token=token,
            loopback_only=is_loopback(host),
        )
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,  # lcm-lite's logging: warnings on stderr, access lines when verbose
            http=_HeadTimeoutProtocol,
            server_header=False,
            headers=[("Server", f"lcm-lite/{__version__}")],
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._uvicorn.run, args=([self._socket],), name="lcm-lite-http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)

    def close(self) -> None:
        self.jobs.close()
        self._uvicorn.should_exit = True
        if self._thread.is_alive():
            self._thread.join()
        self._socket.close()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _HeadTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, except that a connection which sends no complete request
    head within REQUEST_HEAD_SECONDS is closed (uvicorn waits for one forever, so slow or
    silent clients could hold every file descriptor). Checked again every period while the
    connection lives; a request in progress or a keep-alive connection is left to uvicorn."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(REQUEST_HEAD_SECONDS, self._close_if_no_request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_timer.cancel()
        super().connection_lost(exc)

    def _close_if_no_request(self) -> None:
        waiting_for_a_head = self.cycle is None and self.conn.their_state is h11.IDLE
        if waiting_for_a_head:
            self.transport.close()
        else:
            self._head_timer = self.loop.call_later(REQUEST_HEAD_SECONDS, self._close_if_no_request)


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket (uvicorn listens on it): errors now, as one line, and port 0 resolved."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as error:
        sock.close()
        raise UsageError(
            f"cannot listen on {host} port {port}: {error.strerror or error}"
        ) from None
    return sock
