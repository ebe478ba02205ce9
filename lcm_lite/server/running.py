"""A running server: the app on uvicorn, in a thread of this process, around one job queue."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from lcm_lite import __version__
from lcm_lite.errors import UsageError
from lcm_lite.server.app import create_app
from lcm_lite.server.jobs import JobQueue
from lcm_lite.server.schemas import INTEGER_LIMITS
from lcm_lite.server.security import allowed_hosts, check_bind

if TYPE_CHECKING:
    from lcm_lite.pipeline.lcm_pipeline import LCMPipeline

GRACEFUL_SHUTDOWN_SECONDS = 10  # for the answers in flight once the last job is done
REQUEST_HEAD_SECONDS = 10  # a connection that has not sent a whole request head by then is closed
START_TIMEOUT_SECONDS = 30
_END_OF_HEAD = re.compile(rb"\n\r?\n")  # the blank line after a head, as h11 finds it


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
            allowed_hosts=allowed_hosts(host),
        )
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,  # lcm-lite's logging: warnings on stderr, access lines when verbose
            http=_HeadDeadline,
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


class _HeadDeadline(asyncio.Protocol):
    """uvicorn's HTTP/1.1 protocol (h11), wrapped: a connection that sends no complete request
    head within REQUEST_HEAD_SECONDS is closed (uvicorn waits for one forever, so slow or silent
    clients could hold every file descriptor). Once the first head is in, the connection is
    uvicorn's alone (its keep-alive timeout closes it when idle)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # what uvicorn gives its protocol
        self._http = H11Protocol(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes seen: a blank line may come split between packets

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(REQUEST_HEAD_SECONDS, transport.close)
        self._http.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:
            seen = self._tail + data
            if _END_OF_HEAD.search(seen):
                self._deadline.cancel()
                self._deadline = None
            self._tail = seen[-2:]
        self._http.data_received(data)

    def eof_received(self) -> bool | None:
        return self._http.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._http.connection_lost(exc)

    def pause_writing(self) -> None:
        self._http.pause_writing()

    def resume_writing(self) -> None:
        self._http.resume_writing()


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
