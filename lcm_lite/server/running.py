"""A running server: the app on uvicorn, in a thread of this process, around one job queue."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
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
from lcm_lite.server.security import BodyDeadline, allowed_hosts, check_bind

if TYPE_CHECKING:
    from lcm_lite.pipeline.lcm_pipeline import LCMPipeline

GRACEFUL_SHUTDOWN_SECONDS = 10  # for the answers in flight once the last job is done
REQUEST_HEAD_SECONDS = 10  # a connection that has not sent a whole request head by then is closed
LINGER_SECONDS = 30  # a closing connection reads and drops what its client still sends: this long
LINGER_IDLE_SECONDS = 2  # at most, or until its client pauses this long,
LINGER_BYTES = 128 * 1024 * 1024  # or has sent this much
MAX_CONNECTIONS = 1000  # open connections in all (and fewer than the file limit allows)
MAX_CONNECTIONS_PER_CLIENT = 32  # from one address
FILES_KEPT = 64  # file descriptors kept from the connections (models, logs, threads)
ACCEPT_BACKLOG = 64  # connections the kernel queues, and asyncio accepts at once
WARN_EVERY_SECONDS = 10  # at most one warning line this often about too many connections
START_TIMEOUT_SECONDS = 30
log = logging.getLogger("lcm_lite.server")
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
        # the open connections, bounded in all and per client
        self.connections = _Connections(_connection_budget(), MAX_CONNECTIONS_PER_CLIENT)
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
            loras=tuple((adapter.source, adapter.weight) for adapter in pipe.adapters),
            controlnets=tuple((choice.folder.source, choice.scale) for choice in pipe.controlnets),
        )
        self._bodies = BodyDeadline(app)
        config = uvicorn.Config(
            self._bodies,
            lifespan="off",
            log_config=None,  # lcm-lite's logging: warnings on stderr, access lines when verbose
            http=functools.partial(_Connection, self.connections),  # type: ignore[arg-type]
            loop="lcm_lite.server.running:_event_loop",
            backlog=ACCEPT_BACKLOG,
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
        self._bodies.stop()  # a body still awaited gets a 503 now, not a cancelled task later
        self._uvicorn.should_exit = True
        if self._thread.is_alive():
            self._thread.join()
        self._socket.close()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Connections:
    """The open connections of one server, bounded: at most ``per_client`` from one address and
    ``total`` in all (below the file limit). One more evicts, from the same client first, the one
    that has been quiet longest, so that a new request is always read and hostile connections
    cannot hold every file descriptor."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._all: set[_Connection] = set()
        self._by_client: dict[str, set[_Connection]] = {}
        self.evicted = 0
        self._warned_at = -math.inf

    def add(self, connection: _Connection) -> None:
        same = self._by_client.setdefault(connection.client, set())
        if len(same) >= self.per_client:
            self._evict(same)
        if len(self._all) >= self.total:
            self._evict(self._all)
        same.add(connection)
        self._all.add(connection)

    def remove(self, connection: _Connection) -> None:
        self._all.discard(connection)
        same = self._by_client.get(connection.client)
        if same is not None:
            same.discard(connection)
            if not same:
                del self._by_client[connection.client]

    def __len__(self) -> int:
        return len(self._all)

    def _evict(self, among: set[_Connection]) -> None:
        victim = min(among, key=lambda connection: connection.last_active)
        self.remove(victim)
        victim.abort()
        self.evicted += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:  # one line, not one per connection
            self._warned_at = now
            log.warning(
                "too many connections (%d from one client, %d in all at most): closed the "
                "quietest; %d closed so far",
                self.per_client,
                self.total,
                self.evicted,
            )


class _Transport:
    """The transport as uvicorn's protocol sees it: the real one, but its ``close()`` goes
    through the connection, which may linger."""

    def __init__(self, transport: asyncio.Transport, connection: _Connection) -> None:
        self._transport = transport
        self._connection = connection

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if bytes(data[:7]) == b"HTTP/1.":  # uvicorn writes an answer's head in one piece
            self._connection.answered(bytes(data))
        self._transport.write(data)

    def close(self) -> None:
        self._connection.close()

    def is_closing(self) -> bool:
        return self._connection.closing or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Connection(asyncio.Protocol):
    """uvicorn's HTTP/1.1 protocol (h11), wrapped by composition, with the connection-level
    bounds uvicorn lacks:

    - a connection that sends no complete first request head within REQUEST_HEAD_SECONDS is
      closed (uvicorn would wait forever);
    - when the server closes a connection (an answer with ``Connection: close``, e.g. one given
      before the body ended), it first shuts its own side and reads, dropping it, what the client
      still sends, until the client closes, LINGER_IDLE_SECONDS pass without a byte,
      LINGER_SECONDS pass or LINGER_BYTES came (a "lingering close", as nginx does): a client
      still sending its body then reads the answer instead of a connection reset;
    - it counts in its server's :class:`_Connections`, which may evict it.
    """

    def __init__(self, connections: _Connections, *args: Any, **kwargs: Any) -> None:
        self._http = H11Protocol(*args, **kwargs)
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None  # the head deadline, then the linger's
        self._tail = b""  # the last bytes seen: a blank line may come split between packets
        self._head_seen = False
        self._lingering: tuple[float, int] | None = None  # since when, bytes dropped
        self._last_answer_closes = False  # the last answer's head said Connection: close
        self.client = ""
        self.closing = False
        self.last_active = time.monotonic()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else ""
        self._connections.add(self)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(REQUEST_HEAD_SECONDS, self.abort)
        self._http.connection_made(_Transport(transport, self))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self._lingering is not None:
            self._drop(data)
            return
        if not self._head_seen:
            seen = self._tail + data
            if _END_OF_HEAD.search(seen):
                self._head_seen = True
                self._cancel_timer()
            self._tail = seen[-2:]
        self._http.data_received(data)

    def eof_received(self) -> bool | None:
        if self._lingering is not None and self._transport is not None:
            self._transport.close()  # the client is done: send the rest, then close (or abort,
            return None  # at the linger's deadline)
        return self._http.eof_received()

    def answered(self, head: bytes) -> None:
        """An answer's head is being sent."""
        fields = head.partition(b"\r\n\r\n")[0].lower()
        self._last_answer_closes = re.search(rb"\r\nconnection:[^\r]*\bclose\b", fields) is not None

    def close(self) -> None:
        """uvicorn's close: after an answer that said ``Connection: close``, linger; else (idle,
        shutting down, or a second close) close at once."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self.closing or not self._last_answer_closes or not transport.can_write_eof():
            self.closing = True
            self._cancel_timer()
            transport.close()
            return
        self.closing = True
        self._cancel_timer()
        self._lingering = (time.monotonic(), 0)
        try:
            transport.write_eof()  # once what is written is sent: the client reads its answer
        except OSError:  # the client is gone already
            self.abort()
            return
        transport.resume_reading()
        self._arm_linger()

    def abort(self) -> None:
        """Close at once, dropping whatever is unsent or unread."""
        self.closing = True
        self._cancel_timer()
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._cancel_timer()
        self._connections.remove(self)
        self._http.connection_lost(exc)

    def pause_writing(self) -> None:
        self._http.pause_writing()

    def resume_writing(self) -> None:
        self._http.resume_writing()

    def _drop(self, data: bytes) -> None:
        assert self._lingering is not None
        since, dropped = self._lingering
        self._lingering = (since, dropped + len(data))
        if dropped + len(data) >= LINGER_BYTES:
            self.abort()
        else:
            self._arm_linger()

    def _arm_linger(self) -> None:
        assert self._lingering is not None
        self._cancel_timer()
        left = self._lingering[0] + LINGER_SECONDS - time.monotonic()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, min(LINGER_IDLE_SECONDS, left)), self.abort)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _connection_budget() -> int:
    """How many connections may be open at once: MAX_CONNECTIONS, or fewer so that the process
    keeps FILES_KEPT file descriptors for the rest and room for a burst of accepts (accepting past
    the file limit fails, and makes asyncio log a traceback per try)."""
    try:
        import resource
    except ImportError:  # not on Unix
        return MAX_CONNECTIONS
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    # asyncio accepts up to a backlog at once, before their connections are counted
    spare = soft - FILES_KEPT - 2 * ACCEPT_BACKLOG
    return max(MAX_CONNECTIONS_PER_CLIENT, min(MAX_CONNECTIONS, spare))


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's event loop (its ``loop`` setting), which reports at most one of its unexpected
    errors every WARN_EVERY_SECONDS: never a flood of tracebacks on stderr (asyncio logs one per
    failed accept, thousands a second once out of file descriptors)."""
    loop = asyncio.new_event_loop()
    last = -math.inf

    def report(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= WARN_EVERY_SECONDS:
            last = now
            loop.default_exception_handler(context)

    loop.set_exception_handler(report)
    return loop


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
