"""``lcm-lite serve``: the demo page and HTTP APIs (lcm-lite's own and OpenAI's images API) on
FastAPI and uvicorn, the ``[serve]`` extra.

    models    what requests carry and answers hold (pydantic; the OpenAPI document)
    security  listen address, token, Host check, body limits, security headers
    app       the routes, between HTTP and the job queue (lcm_lite.jobs)
    running   Server: the app on uvicorn in a thread
    command   the command line and the signals

This module imports none of them, so that without the extra ``lcm-lite serve`` says what to
install instead of failing on an import.
"""

from __future__ import annotations

from ..extras import require_extra

EXTRA_MODULES = ("fastapi", "uvicorn", "multipart")


def main(argv: list[str]) -> int:
    """``lcm-lite serve ARGS``; a one-line error when the ``[serve]`` extra is missing."""
    require_extra("serve", EXTRA_MODULES, "lcm-lite serve")
    from .command import main as serve_main

    return serve_main(argv)
