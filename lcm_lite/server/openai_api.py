"""The OpenAI images API, under ``/v1`` (and OpenVINO Model Server's paths, under ``/v3``).

POST /v1/images/generations     text to image: OpenAI's fields and OVMS's extras; streamed
                                with ``stream: true`` (``image_stream``)
POST /v1/images/edits           image to image, multipart (a mask is refused); streamed too
GET  /v1/models                 the served model, for OpenAI-style clients
"""

from __future__ import annotations

import base64
import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi import Request as HttpRequest
from starlette.exceptions import HTTPException

from lcm_lite.request import Request
from lcm_lite.server.answers import ImagesAnswer, ModelList, OpenAIErrorAnswer
from lcm_lite.server.image_stream import streamed
from lcm_lite.server.jobs import Job, JobQueue
from lcm_lite.server.routing import Served, finished, json_body, submit
from lcm_lite.server.schemas import MAX_PICTURE_BYTES, ImageEditRequest, ImageGenerationRequest

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
        return streamed(jobs, served, asked, partial_images, kind, request.url.path)

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
    ) -> ImagesAnswer:
        if "mask" in await request.form():  # parsed once: the same form as above
            raise HTTPException(400, "mask is not supported: lcm-lite does image to image only")
        picture = await image.read(MAX_PICTURE_BYTES + 1)
        return await answer(form, form.to_request(None, picture), request, "image_edit")

    @router.get("/models")
    def models() -> ModelList:
        return ModelList(data=[{"id": served.model}])

    return router


def _images_answer(job: Job) -> ImagesAnswer:
    return ImagesAnswer(
        created=int(time.time()),
        data=[{"b64_json": base64.b64encode(png).decode()} for png in job.images],
    )
