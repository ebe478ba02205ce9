"""OpenAI's streamed images: ``stream: true`` on ``/v1/images/generations`` (and ``edits``)
answers server-sent events (FastAPI's ``EventSourceResponse`` and ``format_sse_event``): up to
``partial_images`` previews of the steps, each the tiny VAE's decoding of that step's denoised
latents (``{kind}.partial_image``), then one ``{kind}.completed`` event per image; the fields
are those of the ``openai`` package's ``ImageGenPartialImageEvent`` / ``ImageGenCompletedEvent``
(and the ``ImageEdit...`` twins). A job that fails ends the stream with an ``error`` event in
OpenAI's error shape, which the ``openai`` client raises as an ``APIError``."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import Request as HttpRequest
from fastapi.sse import EventSourceResponse, format_sse_event

from lcm_lite.request import Request
from lcm_lite.server.answers import error_json
from lcm_lite.server.jobs import JobQueue
from lcm_lite.server.routing import Served, submit

NO_TOKENS = {  # OpenAI counts its models' tokens; lcm-lite counts none
    "input_tokens": 0,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    "output_tokens": 0,
    "total_tokens": 0,
}


def preview_steps(num_steps: int, partial_images: int) -> set[int]:
    """The steps (1-based) whose previews are sent: ``partial_images`` spread evenly over the
    steps before the last (whose image is the completed one); fewer when there are fewer steps
    (as OpenAI may send fewer than asked)."""
    return {
        math.ceil((index + 1) * num_steps / (partial_images + 1)) for index in range(partial_images)
    } - {num_steps}


def streamed(
    jobs: JobQueue,
    served: Served,
    request: Request,
    partial_images: int,
    kind: Literal["image_generation", "image_edit"],
    http: HttpRequest,
) -> EventSourceResponse:
    """Queue ``request`` (at once: a refusal is an ordinary error answer) and stream its steps'
    previews and its images as events; a client that hangs up cancels the job (it is looked for
    after each step)."""
    loop = asyncio.get_running_loop()
    steps: asyncio.Queue[tuple[int, int, bytes | None] | None] = asyncio.Queue()

    def on_step(step: int, num_steps: int, preview: bytes | None) -> None:
        loop.call_soon_threadsafe(steps.put_nowait, (step, num_steps, preview))

    job = submit(jobs, served, request, previews=partial_images > 0, on_step=on_step)
    job.outcome.add_done_callback(lambda _: loop.call_soon_threadsafe(steps.put_nowait, None))

    def event(kind_of_event: str, fields: dict[str, object]) -> bytes:
        data = {"type": kind_of_event, "created_at": int(time.time()), **fields}
        return format_sse_event(data_str=json.dumps(data), event=kind_of_event)

    async def events() -> AsyncIterator[bytes]:
        common = {"background": "opaque", "output_format": "png", "quality": "auto"}
        sent = 0
        try:
            while (seen := await steps.get()) is not None:
                step, num_steps, preview = seen
                if await http.is_disconnected():
                    return  # and the job is cancelled, below
                if preview is not None and step in preview_steps(num_steps, partial_images):
                    size = f"{job.request.width}x{job.request.height}"  # resolved once it runs
                    yield event(
                        f"{kind}.partial_image",
                        {
                            "b64_json": base64.b64encode(preview).decode(),
                            "partial_image_index": sent,
                            "size": size,
                            **common,
                        },
                    )
                    sent += 1
            if job.error is not None:
                yield event("error", error_json(http.url.path, 500, str(job.error)))
                return
            for png in job.images:
                size = f"{job.request.width}x{job.request.height}"
                yield event(
                    f"{kind}.completed",
                    {
                        "b64_json": base64.b64encode(png).decode(),
                        "size": size,
                        "usage": NO_TOKENS,
                        **common,
                    },
                )
        finally:
            if not job.outcome.done():  # the client hung up
                job.cancel()

    return EventSourceResponse(events())
