"""What keeps ``lcm-lite serve`` safe on a LAN: where it may listen, the bearer token (compared in
constant time), the Host check against DNS rebinding, body limits and the page's security
headers. The middleware is plain ASGI, around the whole app."""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Callable

from fastapi import HTTPException
from fastapi.security import HTTPBearer
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lcm_lite.errors import UsageError
from lcm_lite.server.schemas import error_json

MIN_TOKEN_CHARS = 16
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
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


bearer = HTTPBearer(
    auto_error=False,
    description="the --token given to lcm-lite serve (Guard checks it before anything else)",
)


def _token_matches(authorization: str, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


class Guard:
    """ASGI middleware, before any route reads a byte of the body: refuses a foreign Host on a
    loopback server (403), a missing or wrong token on a protected path (401), a body over its
    path's limit (413: at once when Content-Length says so, which also spares a client that
    asked ``Expect: 100-continue`` from sending it; else as soon as the count passes it), and
    adds the security headers to every answer."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        loopback_only: bool,
        token: str | None,
        protected: Callable[[str], bool],
        body_limit: Callable[[str], int],
    ) -> None:
        self.app = app
        self.loopback_only = loopback_only
        self.token = token
        self.protected = protected
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        send = self._with_security_headers(send)
        if self.loopback_only and not is_loopback(_host_name(headers.get("host", ""))):
            await _refuse(
                send,
                scope["path"],
                403,
                "this server answers only requests addressed to localhost (check the Host header)",
            )
            return
        if (
            self.token is not None
            and self.protected(scope["path"])
            and not _token_matches(headers.get("authorization", ""), self.token)
        ):
            await _refuse(
                send,
                scope["path"],
                401,
                "missing or wrong token: send the header Authorization: Bearer <token>",
                {"WWW-Authenticate": "Bearer"},
            )
            return
        limit = self.body_limit(scope["path"])
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, scope["path"], 413, _too_large(limit))
            return
        await self.app(scope, _counting(receive, limit), send)

    @staticmethod
    def _with_security_headers(send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        return sending


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


def _too_large(limit: int) -> str:
    return f"the body must be at most {limit} bytes"


def _host_name(host: str) -> str:
    """The name in a Host header: without the port, an IPv6 literal without its brackets."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0]


async def _refuse(
    send: Send, path: str, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(error_json(path, status, message)).encode()
    fields = {
        "content-type": "application/json",
        "content-length": str(len(body)),
        **(headers or {}),
    }
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(name.encode(), value.encode()) for name, value in fields.items()],
        }
    )
    await send({"type": "http.response.body", "body": body})
