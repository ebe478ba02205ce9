"""lcm-lite's own API, under ``/api``: the CLI's option names, JSON in and out.

GET  /api/health               {"status": "ok"}; never needs the token
GET  /api/info                 model, device, the ControlNets, limits, defaults, choices, queue
POST /api/generate             a request; answers when done: JSON with base64 PNGs, or a PNG
POST /api/jobs                 the same request, answered at once (202) with the job's id
GET  /api/jobs/{id}            a job's state and steps done; its images once done
POST /api/control-preview      the control picture a job would make from a picture (a PNG)
"""

from __future__ import annotations

import base64
import io
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from lcm_lite import __version__
from lcm_lite.images.preprocess import check_headers
from lcm_lite.pipeline.control import made_from_photos
from lcm_lite.server.answers import ErrorAnswer, Health, Info, ServedControlNet
from lcm_lite.server.jobs import Job, JobQueue
from lcm_lite.server.routing import Served, finished, json_body, submit
from lcm_lite.server.schemas import (
    CHOICES,
    DEFAULTS,
    LIMITS,
    ControlPreviewRequest,
    GenerateRequest,
    JobView,
    decode_picture,
    shown_fields,
)


def own_api_router(jobs: JobQueue, served: Served, limits: dict[str, int]) -> APIRouter:
    """The ``/api`` routes around ``jobs``; ``limits``: the size limits /api/info adds to the
    fields' own (prompt characters, body bytes)."""
    api = APIRouter(
        prefix="/api", responses={"4XX": {"model": ErrorAnswer}, "5XX": {"model": ErrorAnswer}}
    )

    @api.get("/health")
    def health() -> Health:
        return Health(status="ok")

    @api.get("/info")
    def info() -> Info:
        return Info(
            model=served.model,
            device=served.device,
            version=__version__,
            native_size=served.native_size,
            previews=served.has_previews,
            negative_prompt=served.takes_negative_prompts,
            controlnets=[
                ServedControlNet(source=source, scale=scale) for source, scale in served.controlnets
            ],
            defaults=DEFAULTS,
            limits={**LIMITS, **limits},
            choices=CHOICES,
            queue={
                "capacity": jobs.capacity,
                "waiting": jobs.waiting,
                "running": jobs.running is not None,
                **{outcome: jobs.outcomes[outcome] for outcome in ("done", "failed", "cancelled")},
            },
        )

    @api.post(
        "/generate",
        dependencies=[Depends(json_body)],
        responses={200: {"content": {"image/png": {}}, "description": "JSON, or the first PNG"}},
    )
    async def generate(
        body: GenerateRequest,
        request: HttpRequest,
        format: Annotated[Literal["png", "json"] | None, Query()] = None,
        accept: Annotated[str, Header()] = "",
    ) -> JobView:
        job = await finished(submit(jobs, served, body.to_request(), body.previews), request)
        if format == "png" or (format is None and "image/png" in accept):
            return Response(
                job.images[0],
                media_type="image/png",
                headers={"X-Seed": str(job.request.seed), "X-Job-Id": job.id},
            )
        return job_view(job)

    @api.post("/jobs", status_code=202, response_model=JobView, dependencies=[Depends(json_body)])
    def submit_job(body: GenerateRequest) -> JSONResponse:
        job = submit(jobs, served, body.to_request(), body.previews)
        return JSONResponse(
            job_view(job), status_code=202, headers={"Location": f"/api/jobs/{job.id}"}
        )

    @api.get("/jobs/{job_id}")
    def job(job_id: str) -> JobView:
        found = jobs.get(job_id)
        if found is None:
            raise HTTPException(
                404, f"no such job: {job_id} (finished jobs are kept for a while, then forgotten)"
            )
        return job_view(found)

    @api.post(
        "/control-preview",
        dependencies=[Depends(json_body)],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the control picture"}},
    )
    def control_preview(body: ControlPreviewRequest) -> Response:
        """The control picture a job makes from ``control_image`` with ``control_preprocess``
        (before it is resized to the image's size), as a PNG: what the page shows."""
        try:
            picture = decode_picture(body.control_image, "control_image")
        except ValueError as error:
            raise HTTPException(400, str(error)) from None
        check_headers(picture, jobs.max_picture_pixels)
        made = made_from_photos(picture, body.control_preprocess, body.canny_thresholds)[0]
        png = io.BytesIO()
        made.save(png, format="PNG")
        return Response(png.getvalue(), media_type="image/png")

    return api


def job_view(job: Job) -> dict[str, object]:
    """A job as the API shows it: the request (resolved once it runs), the steps done and, once
    finished, the outcome."""
    state = job.state  # read once: the worker may move it on meanwhile
    shown: dict[str, object] = {
        "id": job.id,
        "state": state,
        "step": job.step,
        "previews": job.previews,
        **shown_fields(job.request, job.given_pictures),
    }
    if state == "running" and (preview := job.preview) is not None:
        shown["preview_png_base64"] = base64.b64encode(preview).decode()
    if state == "done":
        shown.update(
            seconds=round(job.seconds, 3),
            timings={key: round(value, 4) for key, value in job.timings.items()},
            images=[
                {"index": index, "png_base64": base64.b64encode(png).decode()}
                for index, png in enumerate(job.images)
            ],
        )
    elif state == "failed":
        shown["error"] = str(job.error)
    return shown
