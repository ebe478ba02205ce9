"""The OpenAI images API, under ``/v1`` (and OpenVINO Model Server's paths, under ``/v3``).

POST /v1/images/generations     text to image: OpenAI's fields and OVMS's extras
POST /v1/images/edits           image to image, multipart (a mask is refused); lcm-lite's
                                extension: control_image files and the ControlNet fields
GET  /v1/models                 the served model, for OpenAI-style clients
"""

from __future__ import annotations

import base64
import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi import Request as HttpRequest
from starlette.exceptions import HTTPException

from lcm_lite.server.answers import ImagesAnswer, ModelList, OpenAIErrorAnswer
from lcm_lite.server.jobs import Job, JobQueue
from lcm_lite.server.routing import Served, finished, json_body, submit
from lcm_lite.server.schemas import MAX_PICTURE_BYTES, ImageEditRequest, ImageGenerationRequest


def openai_router(jobs: JobQueue, served: Served) -> APIRouter:
    """The OpenAI images routes around ``jobs`` (included under /v1 and /v3)."""
    router = APIRouter(
        responses={"4XX": {"model": OpenAIErrorAnswer}, "5XX": {"model": OpenAIErrorAnswer}}
    )

    @router.post("/images/generations", dependencies=[Depends(json_body)])
    async def images_generations(
        body: ImageGenerationRequest, request: HttpRequest
    ) -> ImagesAnswer:
        job = submit(jobs, served, body.to_request(served.native_size))
        return _images_answer(await finished(job, request))

    @router.post("/images/edits")
    async def images_edits(
        image: Annotated[UploadFile, File(description="the starting picture: PNG, JPEG or WebP")],
        form: Annotated[ImageEditRequest, Form()],
        request: HttpRequest,
        control_image: Annotated[
            list[UploadFile] | None,
            File(description="lcm-lite's extension: a control picture per ControlNet served"),
        ] = None,
    ) -> ImagesAnswer:
        if "mask" in await request.form():  # parsed once: the same form as above
            raise HTTPException(400, "mask is not supported: lcm-lite does image to image only")
        picture = await image.read(MAX_PICTURE_BYTES + 1)
        controls = [await upload.read(MAX_PICTURE_BYTES + 1) for upload in control_image or []]
        job = submit(jobs, served, form.to_request(None, picture, controls))
        return _images_answer(await finished(job, request))

    @router.get("/models")
    def models() -> ModelList:
        return ModelList(data=[{"id": served.model}])

    return router


def _images_answer(job: Job) -> ImagesAnswer:
    return ImagesAnswer(
        created=int(time.time()),
        data=[{"b64_json": base64.b64encode(png).decode()} for png in job.images],
    )
