"""What keeps ``lcm-lite serve`` safe on a LAN: where it may listen, the bearer token (compared in
constant time), the Host names a loopback server answers (against DNS rebinding; Starlette's
TrustedHostMiddleware checks them), body limits and deadlines, and the page's security headers.
The middleware is plain ASGI, around the whole app."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lcm_lite.errors import UsageError
from lcm_lite.server.answers import error_json

MIN_TOKEN_CHARS = 16
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
BODY_IDLE_SECONDS = 15.0  # a request body that sends nothing for this long gets a 408
BODY_SECONDS = 60.0  # and so does one that has not ended this long after its head
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")  # as a Host header names them
BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "the --token given to lcm-lite serve (checked before the body is read)",
}


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


def allowed_hosts(host: str) -> list[str]:
    """The names in a Host header that a server listening on ``host`` answers (the
    ``allowed_hosts`` of TrustedHostMiddleware): on loopback, this machine's usual names and
    ``host`` itself, so that a foreign page whose name a rebinding DNS points here is refused;
    beyond loopback (behind the token), any."""
    if not is_loopback(host):
        return ["*"]
    bare = host.strip("[]")
    return [*LOOPBACK_NAMES, f"[{bare}]" if ":" in bare else bare]


def document_token(app: FastAPI, protected: Callable[[str], bool]) -> None:
    """Declare in ``app``'s OpenAPI document the bearer token that :class:`Guard` checks, on the
    operations of the ``protected`` paths; nothing checks it there."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # kept by FastAPI as app.openapi_schema
            schema.setdefault("components", {})["securitySchemes"] = {"HTTPBearer": BEARER_SCHEME}
            for path, operations in schema["paths"].items():
                if protected(path):
                    for operation in operations.values():
                        operation["security"] = [{"HTTPBearer": []}]
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _token_matches(authorization: str, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


class Guard:
    """ASGI middleware, before any route reads a byte of the body: refuses a missing or wrong
    token on a protected path (401), a body over its path's limit (413: at once when
    Content-Length says so, which also spares a client that asked ``Expect: 100-continue`` from
    sending it; else as soon as the count passes it)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        protected: Callable[[str], bool],
        body_limit: Callable[[str], int],
    ) -> None:
        self.app = app
        self.token = token
        self.protected = protected
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if (
            self.token is not None
            and self.protected(scope["path"])
            and not _token_matches(headers.get("authorization", ""), self.token)
        ):
            await refuse(
                scope,
                receive,
                send,
                401,
                "missing or wrong token: send the header Authorization: Bearer <token>",
                {"WWW-Authenticate": "Bearer"},
            )
            return
        limit = self.body_limit(scope["path"])
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await refuse(scope, receive, send, 413, _too_large(limit))
            return
        await self.app(scope, _counting(receive, limit), send)


class SecurityHeaders:
    """ASGI middleware: SECURITY_HEADERS on every answer, refusals included (an answer's own
    value of one wins)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, sending)


class BodyDeadline:
    """ASGI middleware, around the whole app (``running`` puts it there): a request body must
    keep coming (some of it at least every BODY_IDLE_SECONDS, all of it within BODY_SECONDS) or
    the request gets a 408, and one still awaited when the server stops gets a 503 (not a
    cancelled task's traceback); an answer given before its request's body ended (a refusal, a
    timeout) says ``Connection: close``, so that the server closes the connection, after reading
    and dropping what is still on its way (``running``), instead of waiting for the rest."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def stop(self) -> None:
        """From any thread: the server stops, so bodies still awaited get a 503 now."""
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nothing awaits
                self._loop.call_soon_threadsafe(self._stopping.set)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._stopping is None:
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        stopping = self._stopping
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "0")
        unread = "transfer-encoding" in headers or not (declared.isdigit() and int(declared) == 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BODY_SECONDS
        refusal: tuple[int, str] | None = None  # the answer instead of the app's
        answered = False

        async def receiving() -> Message:
            nonlocal unread, refusal
            if refusal is not None:
                return {"type": "http.disconnect"}
            if not unread:
                return await receive()
            wait = max(0.0, min(BODY_IDLE_SECONDS, deadline - loop.time()))
            arrival = asyncio.ensure_future(receive())
            stopped = asyncio.ensure_future(stopping.wait())
            cancelled = False
            try:
                await asyncio.wait(
                    (arrival, stopped), timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
            except asyncio.CancelledError:  # uvicorn stops, past its graceful shutdown time
                cancelled = True
                task = asyncio.current_task()
                if task is not None and hasattr(task, "uncancel"):  # Python 3.11+
                    task.uncancel()
            finally:
                stopped.cancel()
                arrival.cancel()  # if it has not come
            if not arrival.done() or arrival.cancelled():
                shutting_down = cancelled or stopping.is_set()
                refusal = (
                    (503, "the server is shutting down") if shutting_down else (408, _too_slow())
                )
                return {"type": "http.disconnect"}
            message = arrival.result()
            if message["type"] != "http.request" or not message.get("more_body", False):
                unread = False
            return message

        async def sending(message: Message) -> None:
            nonlocal answered
            if refusal is not None and not answered:
                return  # the app's answer to the disconnect: the refusal replaces it
            if message["type"] == "http.response.start":
                answered = True
                if unread:
                    MutableHeaders(scope=message)["Connection"] = "close"
            await send(message)

        try:
            await self.app(scope, receiving, sending)
        except Exception:
            if refusal is None:
                raise
        if refusal is not None and not answered:
            status, message = refusal
            headers = {**SECURITY_HEADERS, "Connection": "close"}
            await refuse(scope, receive, send, status, message, headers)


def _counting(receive: Receive, limit: int) -> Receive:
    received = 0

    async def receiving() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise HTTPException(413, _too_large(limit))
        return message

    return receiving


def _too_slow() -> str:
    return (
        f"the request body did not come in time (some of it at least every "
        f"{BODY_IDLE_SECONDS:g} s, all of it within {BODY_SECONDS:g} s)"
    )


def _too_large(limit: int) -> str:
    return f"the body must be at most {limit} bytes"


async def refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer ``status`` in the error shape of the path's dialect (``answers.error_json``)
    before any route runs: Starlette's ``JSONResponse``, sent as the ASGI app it is."""
    body = error_json(scope["path"], status, message)
    await JSONResponse(body, status, headers=headers)(scope, receive, send)
