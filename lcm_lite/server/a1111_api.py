"""The AUTOMATIC1111 (stable-diffusion-webui) API, under ``/sdapi/v1``: what SillyTavern, Open
WebUI's AUTOMATIC1111 engine, and scripts on A1111's API call. Its routes answer as A1111's
modules/api/api.py does; the jobs go through the same queue as the other APIs.

POST /sdapi/v1/txt2img          text to image: ``images`` (base64 PNGs), ``parameters``, ``info``
POST /sdapi/v1/img2img          image to image from ``init_images[0]``; inpainting with ``mask``
GET  /sdapi/v1/progress         the running job: progress, ETA, the live preview (tiny VAE)
POST /sdapi/v1/interrupt        stop the running job after its current step
GET  /sdapi/v1/sd-models        the served model
GET|POST /sdapi/v1/options      the settings clients read (and write: ignored)
GET  /sdapi/v1/samplers, schedulers, upscalers, latent-upscale-modes, sd-vae: what there is
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi import Request as HttpRequest
from starlette.exceptions import HTTPException

from lcm_lite import __version__
from lcm_lite.prompting.lora_tags import lora_name
from lcm_lite.request import Request
from lcm_lite.server.a1111_schemas import (
    MOST_STEPS,
    A1111Request,
    ImagesAnswer,
    Img2ImgRequest,
    ProgressAnswer,
    Txt2ImgRequest,
)
from lcm_lite.server.answers import A1111ErrorAnswer
from lcm_lite.server.jobs import Job, JobQueue
from lcm_lite.server.routing import Served, finished, json_body, submit

SAMPLER = "LCM"  # A1111's name for the LCM sampler (since 1.7)


def a1111_router(jobs: JobQueue, served: Served) -> APIRouter:
    """The ``/sdapi/v1`` routes around ``jobs``."""
    api = APIRouter(
        prefix="/sdapi/v1",
        tags=["AUTOMATIC1111 API"],
        responses={"4XX": {"model": A1111ErrorAnswer}, "5XX": {"model": A1111ErrorAnswer}},
    )

    async def generate(
        body: A1111Request, pictures: dict[str, bytes | None], http: HttpRequest
    ) -> dict:
        """Run ``body``'s batches one after the other; A1111's answer."""
        notes = []
        if body.steps > MOST_STEPS:
            notes.append(f"steps {body.steps} taken as {MOST_STEPS}, the most served")
        requests, lora_notes = body.requests(pictures, served.loras)
        notes += lora_notes
        if requests[0].negative_prompt is not None and not served.takes_negative_prompts:
            notes.append("negative_prompt ignored: a latent consistency model takes none")
            requests = [_without_negative_prompt(request) for request in requests]
        done: list[Job] = []
        for request in requests:
            request.check()
            job = submit(jobs, served, request, previews=served.has_previews)
            done.append(await finished(job, http))
        images = [png for job in done for png in job.images]
        return {
            "images": [base64.b64encode(png).decode() for png in images],
            "parameters": body.model_dump(exclude={"init_images", "mask"}),
            "info": json.dumps(_info(body, done, served, notes)),
        }

    @api.post("/txt2img", dependencies=[Depends(json_body)])
    async def txt2img(body: Txt2ImgRequest, http: HttpRequest) -> ImagesAnswer:
        return await generate(body, {}, http)

    @api.post("/img2img", dependencies=[Depends(json_body)])
    async def img2img(body: Img2ImgRequest, http: HttpRequest) -> ImagesAnswer:
        return await generate(body, body.pictures(), http)

    @api.get("/progress")
    def progress(
        skip_current_image: Annotated[bool, Query()] = False,
    ) -> ProgressAnswer:
        job = jobs.running
        count = jobs.waiting + (job is not None)
        if job is None:
            idle = {"job": "", "job_timestamp": "0", "sampling_step": 0, "sampling_steps": 0}
            state = {**idle, "interrupted": False, "job_count": count, "job_no": 0}
            return ProgressAnswer(progress=0.0, eta_relative=0.0, state=state)
        steps = max(1, job.request.steps)
        fraction = min(1.0, job.step / steps)
        elapsed = time.time() - job.started if job.started else 0.0
        eta = elapsed / fraction - elapsed if fraction > 0 else jobs.last_seconds
        preview = None if skip_current_image else job.preview
        return ProgressAnswer(
            progress=fraction,
            eta_relative=max(0.0, eta),
            state={
                "interrupted": job.cancelled,
                "job": job.id,
                "job_count": count,
                "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.started)),
                "job_no": 0,
                "sampling_step": job.step,
                "sampling_steps": steps,
            },
            current_image=None if preview is None else base64.b64encode(preview).decode(),
        )

    @api.post("/interrupt")
    def interrupt() -> dict:
        jobs.cancel_running()
        return {}

    @api.get("/sd-models")
    def sd_models() -> list[dict[str, Any]]:
        name = served.model
        return [
            {
                "title": name,
                "model_name": name,
                "hash": None,
                "sha256": None,
                "filename": name,
                "config": None,
            }
        ]

    @api.get("/options")
    def options() -> dict[str, Any]:
        return {
            "sd_model_checkpoint": served.model,
            "sd_checkpoint_hash": None,
            "samples_format": "png",
            "CLIP_stop_at_last_layers": 1,
            "sd_vae": "Automatic",
        }

    @api.post("/options", dependencies=[Depends(json_body)])
    def set_options(settings: Annotated[dict[str, Any], Body()]) -> None:
        """Settings are accepted and ignored; another checkpoint than the served one is
        refused."""
        asked = settings.get("sd_model_checkpoint", served.model)
        if asked != served.model:
            raise HTTPException(
                400, f"sd_model_checkpoint: lcm-lite serves one model, {served.model}"
            )

    @api.get("/loras")
    def loras() -> list[dict[str, Any]]:
        """The LoRAs loaded with the model, by the name ``<lora:NAME:WEIGHT>`` calls them."""
        return [
            {"name": lora_name(source), "alias": lora_name(source), "path": source, "metadata": {}}
            for source, _ in served.loras
        ]

    @api.get("/samplers")
    def samplers() -> list[dict[str, Any]]:
        return [{"name": SAMPLER, "aliases": ["lcm"], "options": {}}]

    @api.get("/schedulers")
    def schedulers() -> list[dict[str, Any]]:
        return [
            {
                "name": "automatic",
                "label": "Automatic",
                "aliases": None,
                "default_rho": -1,
                "need_inner_model": False,
            }
        ]

    @api.get("/upscalers")
    def upscalers() -> list[dict[str, Any]]:
        none = {"name": "None", "model_name": None, "model_path": None, "model_url": None}
        return [{**none, "scale": 4}]

    @api.get("/latent-upscale-modes")
    def latent_upscale_modes() -> list[dict[str, Any]]:
        return []

    @api.get("/sd-vae")
    def sd_vae() -> list[dict[str, Any]]:
        return []

    return api


def _without_negative_prompt(request: Request) -> Request:
    return replace(request, negative_prompt=None)


def _info(body: A1111Request, done: list[Job], served: Served, notes: list[str]) -> dict:
    """A1111's ``info`` (processing.Processed.js): the seeds and settings used, one seed per
    image (the images of one batch share their batch's seed; their PNGs record their index)."""
    first = done[0].request  # resolved: the size, steps and seed used
    seeds = [job.request.seed for job in done for _ in job.images]
    negative = first.negative_prompt[0] if first.negative_prompt else ""
    info = {
        "prompt": body.prompt,
        "all_prompts": [body.prompt] * len(seeds),
        "negative_prompt": negative,
        "all_negative_prompts": [negative] * len(seeds),
        "seed": first.seed,
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * len(seeds),
        "width": first.width,
        "height": first.height,
        "sampler_name": SAMPLER,
        "cfg_scale": first.guidance_scale,
        "steps": first.steps,
        "batch_size": first.num_images,
        "clip_skip": (first.clip_skip or 0) + 1,  # A1111's convention: 1 is none
        "sd_model_name": served.model,
        "index_of_first_image": 0,
        "version": f"lcm-lite {__version__}",
        "notes": notes,
    }
    if done[0].has_picture:
        info["denoising_strength"] = first.strength
    return info
