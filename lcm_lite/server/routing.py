"""What both APIs' routes share: the served model's facts, submitting a job, waiting for it
without blocking the event loop, and the JSON-only rule for bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Header
from fastapi import Request as HttpRequest
from starlette.exceptions import HTTPException

from lcm_lite.errors import Cancelled, UsageError
from lcm_lite.request import Request
from lcm_lite.server.jobs import Job, JobQueue, QueueFull

DISCONNECT_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Served:
    """The served model as the routes describe it."""

    model: str
    device: str
    native_size: int
    has_previews: bool
    takes_negative_prompts: bool
    loras: tuple[tuple[str, float], ...] = ()  # the adapters loaded: (source, weight)
    controlnets: tuple[tuple[str, float], ...] = ()  # the ControlNets loaded: (source, scale)


def submit(
    jobs: JobQueue,
    served: Served,
    request: Request,
    previews: bool = False,
    on_step: Callable[[int, int, bytes | None], None] | None = None,
) -> Job:
    """Queue ``request``: a 400 for what the served model cannot make, a 503 when full."""
    if (previews or request.vae == "tiny") and not served.has_previews:
        raise HTTPException(
            400,
            "previews and vae tiny need a tiny VAE: start lcm-lite serve with --tiny-vae "
            "(a folder or hub id, e.g. rupeshs/taesd-ov)",
        )
    try:
        return jobs.submit(request, previews=previews, on_step=on_step)
    except QueueFull as error:
        raise HTTPException(503, str(error), {"Retry-After": str(error.retry_after)}) from None
    except Cancelled as error:
        raise HTTPException(503, str(error)) from None


async def finished(job: Job, request: HttpRequest) -> Job:
    """Wait for ``job`` without blocking the event loop; cancel it if the client hangs up.
    Raises the HTTP error its failure calls for."""
    outcome = asyncio.wrap_future(job.outcome)
    while not outcome.done():
        await asyncio.wait([outcome], timeout=DISCONNECT_POLL_SECONDS)
        if not outcome.done() and await request.is_disconnected():
            job.cancel()
    # read, not raised here: raised, the kept job's error would hold this frame in a traceback
    if outcome.cancelled() or outcome.exception() is not None:
        error = job.error
        status = {Cancelled: 503, UsageError: 400}.get(type(error), 500)
        raise HTTPException(status, str(error))
    return job


def json_body(content_type: Annotated[str, Header()] = "") -> None:
    """POST bodies are JSON, declared so: a foreign web page cannot send that without the
    browser asking this server first (CORS preflight), and the server never answers yes."""
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise HTTPException(415, "send the body as JSON with Content-Type: application/json")
