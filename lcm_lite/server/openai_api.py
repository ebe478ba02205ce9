"""The OpenAI images API, under ``/v1`` (and OpenVINO Model Server's paths, under ``/v3``).

POST /v1/images/generations     text to image: OpenAI's fields and OVMS's extras; streamed
                                with ``stream: true`` (``image_stream``)
POST /v1/images/edits           image to image, multipart; with a ``mask`` file, inpainting;
                                streamed too; lcm-lite's extension: control_image files and
                                ControlNet fields
GET  /v1/models                 the served model, for OpenAI-style clients
"""

from __future__ import annotations

import base64
import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi import Request as HttpRequest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from lcm_lite.images.mask import openai_mask
from lcm_lite.request import Request
from lcm_lite.server.answers import ImagesAnswer, ModelList, OpenAIErrorAnswer
from lcm_lite.server.image_stream import streamed
from lcm_lite.server.jobs import Job, JobQueue
from lcm_lite.server.routing import Served, finished, json_body, submit
from lcm_lite.server.schemas import (
    MAX_PICTURE_BYTES,
    ImageEditRequest,
    ImageGenerationRequest,
    check_picture_size,
)

MASK_HELP = (
    "inpainting: the area to repaint, a picture of the picture's shape. With an alpha channel, "
    "OpenAI's rule: its fully transparent pixels are repainted. Without alpha, OpenVINO Model "
    "Server's and diffusers': white (at least half gray) is repainted, black kept"
)

STREAMED = {200: {"content": {"text/event-stream": {}}, "description": "JSON, or events"}}


def openai_router(jobs: JobQueue, served: Served) -> APIRouter:
    """The OpenAI images routes around ``jobs`` (included under /v1 and /v3)."""
    router = APIRouter(
        responses={"4XX": {"model": OpenAIErrorAnswer}, "5XX": {"model": OpenAIErrorAnswer}}
    )

    async def answer(
        body: ImageGenerationRequest | ImageEditRequest,
        asked: Request,
        request: HttpRequest,
        kind: str,
    ) -> ImagesAnswer:
        """The images once done, or (``stream``) the events of the steps and images."""
        if not body.stream:
            return _images_answer(await finished(submit(jobs, served, asked), request))
        partial_images = body.partial_images or 0
        if partial_images and not served.has_previews:
            raise HTTPException(
                400,
                "partial_images needs a tiny VAE: start lcm-lite serve with --tiny-vae (a "
                "folder or hub id, e.g. rupeshs/taesd-ov), or stream with partial_images 0",
            )
        return streamed(jobs, served, asked, partial_images, kind, request)

    @router.post("/images/generations", dependencies=[Depends(json_body)], responses=STREAMED)
    async def images_generations(
        body: ImageGenerationRequest, request: HttpRequest
    ) -> ImagesAnswer:
        asked = body.to_request(served.native_size)
        return await answer(body, asked, request, "image_generation")

    @router.post("/images/edits", responses=STREAMED)
    async def images_edits(
        image: Annotated[UploadFile, File(description="the starting picture: PNG, JPEG or WebP")],
        form: Annotated[ImageEditRequest, Form()],
        request: HttpRequest,
        mask: Annotated[UploadFile | None, File(description=MASK_HELP)] = None,
        control_image: Annotated[
            list[UploadFile] | None,
            File(description="lcm-lite's extension: a control picture per ControlNet served"),
        ] = None,
    ) -> ImagesAnswer:
        picture = await image.read(MAX_PICTURE_BYTES + 1)
        white_is_repaint = None
        if mask is not None:
            upload = check_picture_size(await mask.read(MAX_PICTURE_BYTES + 1))
            white_is_repaint = await run_in_threadpool(openai_mask, upload, jobs.max_picture_pixels)
        controls = [await control.read(MAX_PICTURE_BYTES + 1) for control in control_image or []]
        asked = form.to_request(None, picture, white_is_repaint, controls)
        return await answer(form, asked, request, "image_edit")

    @router.get("/models")
    def models() -> ModelList:
        return ModelList(data=[{"id": served.model}])

    return router


def _images_answer(job: Job) -> ImagesAnswer:
    return ImagesAnswer(
        created=int(time.time()),
        data=[{"b64_json": base64.b64encode(png).decode()} for png in job.images],
    )
