"""Cross-site requests refused: a web page the user visits must not make the server work.

A page may post an HTML form (multipart, urlencoded or plain text: "simple" requests that the
browser sends without asking first) to any address, loopback included. Browsers say where such a
request comes from: ``Origin`` on every POST, and ``Sec-Fetch-Site``. A state-changing request
(any method but GET, HEAD and OPTIONS) whose ``Origin`` is not this server's own, or whose
``Sec-Fetch-Site`` is neither ``same-origin`` nor ``none``, is refused with 403, as Django and
Jupyter do. Clients that send neither header (scripts, curl, the ``openai`` client) are
unaffected, and so is the page, which calls the API from the server's own origin.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from lcm_lite.server.security import refuse

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_SITE_FETCHES = frozenset({"same-origin", "none"})  # none: the user's own doing (address bar)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class SameOrigin:
    """ASGI middleware: a 403 for a state-changing request that a browser says comes from
    another origin (``Origin`` naming another host or port than this request's ``Host``, or
    ``Sec-Fetch-Site`` cross-site or same-site); nothing of its body is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        reason = foreign_reason(
            headers.get("origin"),
            headers.get("sec-fetch-site"),
            headers.get("host", ""),
            scope.get("scheme", "http"),
        )
        if reason is None:
            await self.app(scope, receive, send)
            return
        await refuse(scope, receive, send, 403, reason)


def foreign_reason(
    origin: str | None, fetch_site: str | None, host: str, scheme: str
) -> str | None:
    """Why a state-changing request is refused as cross-site, or None when it is not: no
    headers, or headers that name this server (``host``, as the client addressed it)."""
    if fetch_site is not None and fetch_site.strip().lower() not in SAME_SITE_FETCHES:
        return (
            f"a request from another site (Sec-Fetch-Site: {fetch_site:.20}) is refused: call "
            "the API from the server's own page or from a program"
        )
    if origin is not None and not _same_origin(origin, host, scheme):
        return (
            f"a request from another origin ({origin:.60}) is refused: call the API from the "
            "server's own page or from a program"
        )
    return None


def _same_origin(origin: str, host: str, scheme: str) -> bool:
    """Whether ``origin`` (``scheme://host[:port]``; ``null`` never) names ``host`` (this
    request's Host header): the same host name and port. A port left out is the origin's
    scheme's default, on either side: behind a proxy that ends TLS, ``https://example.org``
    is the server at ``Host: example.org``."""
    try:
        theirs, ours = urlsplit(origin.strip()), urlsplit(f"{scheme}://{host.strip()}")
        default = _DEFAULT_PORTS.get(theirs.scheme.lower())
        their_port, our_port = theirs.port or default, ours.port or default
    except ValueError:  # a port that is not a number, or out of range
        return False
    return (
        theirs.scheme.lower() in _DEFAULT_PORTS
        and theirs.hostname is not None
        and theirs.hostname == ours.hostname  # urlsplit lowercases both
        and their_port == our_port
        and not theirs.path.strip("/")
    )
