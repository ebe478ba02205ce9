"""The HTTP app: the middleware (security headers, Host check, cross-site refusal, token and
body limits), the error answers, the page, and the APIs' routers (``own_api``, ``openai_api``,
``a1111_api``), which only translate between HTTP and the job queue.

    GET  /                          the page (and its scripts and styles beside it)
    /api/...                        lcm-lite's own API (``own_api``)
    /v1/..., /v3/...                the OpenAI / OVMS images API (``openai_api``)
    /sdapi/v1/...                   the AUTOMATIC1111 API (``a1111_api``)
    /mcp                            MCP's streamable HTTP (``mcp_tools``), with the [mcp] extra
    GET  /openapi.json              all of the above, described
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from lcm_lite import __version__
from lcm_lite.errors import UsageError
from lcm_lite.extras import installed
from lcm_lite.server import MCP_EXTRA_MODULES
from lcm_lite.server.a1111_api import a1111_router
from lcm_lite.server.answers import error_json
from lcm_lite.server.jobs import JobQueue
from lcm_lite.server.openai_api import openai_router
from lcm_lite.server.origin import SameOrigin
from lcm_lite.server.own_api import own_api_router
from lcm_lite.server.routing import Served
from lcm_lite.server.schemas import MAX_PICTURE_BASE64_CHARS, MAX_PICTURE_BYTES, MAX_PROMPT_CHARS
from lcm_lite.server.security import Guard, SecurityHeaders, document_token

MAX_BODY_BYTES = 64 * 1024  # a request without a picture


def picture_body_bytes(controlnets: int) -> int:
    """The largest body of a request with pictures: a starting picture, its mask and a control
    picture for each of the server's ``controlnets``."""
    return (2 + controlnets) * MAX_PICTURE_BASE64_CHARS + MAX_BODY_BYTES


MAX_PICTURE_BODY_BYTES = picture_body_bytes(0)  # a server without ControlNets
PICTURE_PATHS = (
    "/api/generate",
    "/api/jobs",
    "/api/control-preview",
    "/v1/images/edits",
    "/v3/images/edits",
    "/sdapi/v1/img2img",
    "/mcp",
)
MCP_PATH = "/mcp"
# lcm_lite/static: the page, its files
PAGE_PATHS = (
    "/",
    "/app.js",
    "/live.js",
    "/style.css",
    "/mask.js",
    "/mask.css",
    "/control.js",
    "/control.css",
)
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def needs_token(path: str) -> bool:
    """Whether a path needs the token (when there is one): every API path but the health check;
    not the page, nor the OpenAPI document."""
    return (
        path.startswith(("/api/", "/v1/", "/v3/", "/sdapi/")) or path == MCP_PATH
    ) and path != "/api/health"


def body_limit(picture_body: int) -> Callable[[str], int]:
    """The largest body each path accepts, in bytes (checked before a byte is decoded):
    ``picture_body`` (``picture_body_bytes``) on a path that takes pictures."""
    return lambda path: picture_body if path in PICTURE_PATHS else MAX_BODY_BYTES


def create_app(
    jobs: JobQueue,
    *,
    model: str,
    device: str,
    native_size: int,
    has_previews: bool,
    takes_negative_prompts: bool,
    token: str | None,
    allowed_hosts: list[str],
    loras: tuple[tuple[str, float], ...] = (),
    controlnets: tuple[tuple[str, float], ...] = (),
) -> FastAPI:
    """The whole HTTP surface of ``lcm-lite serve`` around ``jobs``, answering requests whose
    Host header names one of ``allowed_hosts`` (``security.allowed_hosts``)."""
    app = FastAPI(
        title="lcm-lite",
        version=__version__,
        description="Text-to-image with a latent consistency model on OpenVINO: lcm-lite's own "
        "JSON API under /api, the OpenAI / OpenVINO Model Server images API under /v1 and "
        "/v3, and the AUTOMATIC1111 API under /sdapi/v1.",
        docs_url=None,  # the interactive docs load scripts from a CDN: not offline, not our CSP
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    # The last added runs first: security headers, then the Host check, then the cross-site
    # refusal (``origin``), then token and body.
    picture_body = picture_body_bytes(len(controlnets))
    app.add_middleware(
        Guard, token=token, protected=needs_token, body_limit=body_limit(picture_body)
    )
    app.add_middleware(SameOrigin)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(SecurityHeaders)
    for error_type, handler in _ERROR_HANDLERS.items():
        app.add_exception_handler(error_type, handler)
    if token is not None:
        document_token(app, needs_token)

    page = _PageFiles(packages=[("lcm_lite", "static")], html=True)
    for path in PAGE_PATHS:  # routes, not a mount at /: a mount would take the API's 405s
        app.add_route(path, page, methods=["GET"], include_in_schema=False)

    served = Served(
        model, device, native_size, has_previews, takes_negative_prompts, loras, controlnets
    )
    size_limits = {
        "prompt_chars": MAX_PROMPT_CHARS,
        "body_bytes": MAX_BODY_BYTES,
        "picture_bytes": MAX_PICTURE_BYTES,
        "picture_body_bytes": picture_body,
        "picture_pixels": jobs.max_picture_pixels,
    }
    app.include_router(own_api_router(jobs, served, size_limits))
    for version in ("v1", "v3"):
        app.include_router(
            openai_router(jobs, served),
            prefix=f"/{version}",
            tags=[f"OpenAI images API ({'OVMS paths' if version == 'v3' else 'OpenAI paths'})"],
        )
    app.include_router(a1111_router(jobs, served))
    if installed(MCP_EXTRA_MODULES):
        from lcm_lite.server.mcp_tools import McpEndpoint, create_mcp_server

        mcp = McpEndpoint(create_mcp_server(jobs, local_files=False))
        app.add_route(MCP_PATH, mcp, methods=["GET", "POST", "DELETE"], include_in_schema=False)
    return app


class _PageFiles(StaticFiles):
    """The page's files with the content types above, not the platform's guesses (some call
    .js text/plain, a script that browsers refuse to run under ``nosniff``)."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        if response.status_code != 304:  # a 304 has no body, nor content type
            response.headers["Content-Type"] = CONTENT_TYPES[Path(full_path).suffix]
        return response


def _error(request: HttpRequest, status: int, message: str, headers=None) -> JSONResponse:
    return JSONResponse(error_json(request.url.path, status, message), status, headers=headers)


async def _http_error(request: HttpRequest, error: HTTPException) -> JSONResponse:
    message = error.detail
    if error.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.url.path}"
    elif error.status_code == 405 and message == "Method Not Allowed":
        message = f"{request.url.path} accepts {error.headers.get('Allow', '')}"
    return _error(request, error.status_code, message, error.headers)


async def _invalid(request: HttpRequest, error: RequestValidationError) -> JSONResponse:
    return _error(request, 400, "; ".join(_describe(problem) for problem in error.errors()[:3]))


async def _usage_error(request: HttpRequest, error: UsageError) -> JSONResponse:
    return _error(request, 400, str(error))


async def _internal_error(request: HttpRequest, error: Exception) -> JSONResponse:
    return _error(request, 500, f"internal error: {type(error).__name__}")


_ERROR_HANDLERS = {
    HTTPException: _http_error,
    RequestValidationError: _invalid,
    UsageError: _usage_error,
    Exception: _internal_error,
}


def _describe(problem: dict) -> str:
    """One pydantic error as a phrase: the field, what is wrong, what was given."""
    kind, context = problem["type"], problem.get("ctx", {})
    if kind == "json_invalid":
        return f"the body is not valid JSON: {context.get('error')}"
    if kind == "value_error":
        return str(context.get("error"))
    where = ".".join(str(part) for part in problem["loc"][1:]) or "the body"
    message = f"{where}: {problem['msg']}"
    given = problem.get("input")
    if kind not in ("missing", "extra_forbidden") and isinstance(given, (int, float, str)):
        message += f", got {given!r:.40}"
    return message
