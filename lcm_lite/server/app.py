"""The HTTP app: routes that translate between HTTP and the job queue, nothing more.

    GET  /                          the page (and /app.js, /style.css beside it)
    GET  /api/health                {"status": "ok"}; never needs the token
    GET  /api/info                  model, device, limits, defaults, queue
    POST /api/generate              a request; answers when done: JSON with base64 PNGs, or a PNG
    POST /api/jobs                  the same request, answered at once (202) with the job's id
    GET  /api/jobs/{id}             a job's state and steps done; its images once done
    POST /v1/images/generations     OpenAI's images API (and OVMS's, at /v3/...)
    POST /v1/images/edits           image-to-image, multipart (501 until the pipeline has it)
    GET  /v1/models                 the served model, for OpenAI-style clients
    GET  /openapi.json              all of the above, described

Waiting for a job never blocks the event loop: the worker thread wakes the waiting request, and
a client that hangs up cancels its job.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.resources
import time
from typing import Annotated, Literal

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    File,
    Form,
    Header,
    Query,
    Security,
    UploadFile,
)
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from lcm_lite import __version__
from lcm_lite.errors import Cancelled, UsageError
from lcm_lite.server.jobs import Job, JobQueue, QueueFull, Request
from lcm_lite.server.schemas import (
    DEFAULTS,
    GUIDANCE_LIMITS,
    INTEGER_LIMITS,
    MAX_PICTURE_BASE64_CHARS,
    MAX_PICTURE_BYTES,
    MAX_PROMPT_CHARS,
    SEED_LIMIT,
    ErrorAnswer,
    GenerateRequest,
    Health,
    ImageEditRequest,
    ImageGenerationRequest,
    ImagesAnswer,
    Info,
    JobView,
    ModelList,
    OpenAIErrorAnswer,
    error_json,
)
from lcm_lite.server.security import Guard, bearer

MAX_BODY_BYTES = 64 * 1024  # a request without a picture
MAX_PICTURE_BODY_BYTES = MAX_PICTURE_BASE64_CHARS + MAX_BODY_BYTES  # one with a picture
PICTURE_PATHS = ("/api/generate", "/api/jobs", "/v1/images/edits", "/v3/images/edits")
DISCONNECT_POLL_SECONDS = 0.5
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_API_ERRORS = {"4XX": {"model": ErrorAnswer}, "5XX": {"model": ErrorAnswer}}
_OPENAI_ERRORS = {"4XX": {"model": OpenAIErrorAnswer}, "5XX": {"model": OpenAIErrorAnswer}}


def needs_token(path: str) -> bool:
    """Whether a path needs the token (when there is one): every API path but the health check;
    not the page, nor the OpenAPI document."""
    return path.startswith(("/api/", "/v1/", "/v3/")) and path != "/api/health"


def body_limit(path: str) -> int:
    """The largest body a path accepts, in bytes (checked before a byte is decoded)."""
    return MAX_PICTURE_BODY_BYTES if path in PICTURE_PATHS else MAX_BODY_BYTES


def create_app(
    jobs: JobQueue,
    *,
    model: str,
    device: str,
    native_size: int,
    has_previews: bool,
    takes_negative_prompts: bool,
    token: str | None,
    loopback_only: bool,
) -> FastAPI:
    """The whole HTTP surface of ``lcm-lite serve`` around ``jobs``."""
    app = FastAPI(
        title="lcm-lite",
        version=__version__,
        description="Text-to-image with a latent consistency model on OpenVINO: lcm-lite's own "
        "JSON API under /api and the OpenAI / OpenVINO Model Server images API under /v1 and "
        "/v3.",
        docs_url=None,  # the interactive docs load scripts from a CDN: not offline, not our CSP
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_middleware(
        Guard,
        loopback_only=loopback_only,
        token=token,
        protected=needs_token,
        body_limit=body_limit,
    )
    for error_type, handler in _ERROR_HANDLERS.items():
        app.add_exception_handler(error_type, handler)
    token_scheme = [Security(bearer)] if token is not None else []  # for /openapi.json

    for path, (name, content_type) in STATIC_FILES.items():
        app.add_api_route(
            path, _static(name, content_type), methods=["GET"], include_in_schema=False
        )

    api = APIRouter(prefix="/api", responses=_API_ERRORS)

    @api.get("/health")
    def health() -> Health:
        return Health(status="ok")

    @api.get("/info", dependencies=token_scheme)
    def info() -> Info:
        return Info(
            model=model,
            device=device,
            version=__version__,
            native_size=native_size,
            previews=has_previews,
            negative_prompt=takes_negative_prompts,
            defaults=DEFAULTS,
            limits={
                **{
                    name: {"min": low, "max": high, "multiple_of": multiple}
                    for name, (low, high, multiple) in INTEGER_LIMITS.items()
                },
                "guidance": {"min": GUIDANCE_LIMITS[0], "max": GUIDANCE_LIMITS[1]},
                "seed": {"min": 0, "max": SEED_LIMIT - 1},
                "prompt_chars": MAX_PROMPT_CHARS,
                "body_bytes": MAX_BODY_BYTES,
                "picture_bytes": MAX_PICTURE_BYTES,
                "picture_body_bytes": MAX_PICTURE_BODY_BYTES,
            },
            queue={
                "capacity": jobs.capacity,
                "waiting": jobs.waiting,
                "running": jobs.running is not None,
                **{outcome: jobs.outcomes[outcome] for outcome in ("done", "failed", "cancelled")},
            },
        )

    @api.post(
        "/generate",
        dependencies=[*token_scheme, Depends(_json_body)],
        responses={200: {"content": {"image/png": {}}, "description": "JSON, or the first PNG"}},
    )
    async def generate(
        body: GenerateRequest,
        request: HttpRequest,
        format: Annotated[Literal["png", "json"] | None, Query()] = None,
        accept: Annotated[str, Header()] = "",
    ) -> JobView:
        job = await _finished(_submit(jobs, body.job_request(), has_previews), request)
        if format == "png" or (format is None and "image/png" in accept):
            return Response(
                job.images[0],
                media_type="image/png",
                headers={"X-Seed": str(job.request.seed), "X-Job-Id": job.id},
            )
        return job_view(job)

    @api.post(
        "/jobs",
        status_code=202,
        response_model=JobView,
        dependencies=[*token_scheme, Depends(_json_body)],
    )
    def submit(body: GenerateRequest) -> JSONResponse:
        job = _submit(jobs, body.job_request(), has_previews)
        return JSONResponse(
            job_view(job), status_code=202, headers={"Location": f"/api/jobs/{job.id}"}
        )

    @api.get("/jobs/{job_id}", dependencies=token_scheme)
    def job(job_id: str) -> JobView:
        found = jobs.get(job_id)
        if found is None:
            raise HTTPException(
                404, f"no such job: {job_id} (finished jobs are kept for a while, then forgotten)"
            )
        return job_view(found)

    app.include_router(api)
    for version in ("v1", "v3"):
        app.include_router(
            _openai_router(jobs, model, native_size, has_previews),
            prefix=f"/{version}",
            dependencies=token_scheme,
            tags=[f"OpenAI images API ({'OVMS paths' if version == 'v3' else 'OpenAI paths'})"],
        )
    return app


def _openai_router(jobs: JobQueue, model: str, native_size: int, has_previews: bool) -> APIRouter:
    router = APIRouter(responses=_OPENAI_ERRORS)

    @router.post("/images/generations", dependencies=[Depends(_json_body)])
    async def images_generations(
        body: ImageGenerationRequest, request: HttpRequest
    ) -> ImagesAnswer:
        job = await _finished(_submit(jobs, body.job_request(native_size), has_previews), request)
        return _images_answer(job)

    @router.post("/images/edits")
    async def images_edits(
        image: Annotated[UploadFile, File(description="the starting picture: PNG, JPEG or WebP")],
        form: Annotated[ImageEditRequest, Form()],
        request: HttpRequest,
    ) -> ImagesAnswer:
        if "mask" in await request.form():  # parsed once: the same form as above
            raise HTTPException(400, "mask is not supported: lcm-lite does image to image only")
        picture = await image.read(MAX_PICTURE_BYTES + 1)
        job = _submit(jobs, form.edit_request(picture), has_previews)
        return _images_answer(await _finished(job, request))

    @router.get("/models")
    def models() -> ModelList:
        return ModelList(data=[{"id": model}])

    return router


def _images_answer(job: Job) -> ImagesAnswer:
    return ImagesAnswer(
        created=int(time.time()),
        data=[{"b64_json": base64.b64encode(png).decode()} for png in job.images],
    )


def job_view(job: Job) -> dict[str, object]:
    """A job as the API shows it: the request, the steps done and, once finished, the outcome."""
    state = job.state  # read once: the worker may move it on meanwhile
    shown: dict[str, object] = {
        "id": job.id,
        "state": state,
        "step": job.step,
        **{name: getattr(job.request, name) for name in _SHOWN_FIELDS},
        "strength": None if job.request.image is None else job.request.strength,
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


_SHOWN_FIELDS = [name for name in Request.__dataclass_fields__ if name not in ("image", "strength")]


def _submit(jobs: JobQueue, request: Request, has_previews: bool) -> Job:
    if (request.previews or request.vae == "tiny") and not has_previews:
        raise HTTPException(
            400,
            "previews and vae tiny need a tiny VAE: start lcm-lite serve with --tiny-vae "
            "(a folder or hub id, e.g. rupeshs/taesd-ov)",
        )
    try:
        return jobs.submit(request)
    except QueueFull as error:
        raise HTTPException(503, str(error), {"Retry-After": str(error.retry_after)}) from None
    except Cancelled as error:
        raise HTTPException(503, str(error)) from None


async def _finished(job: Job, request: HttpRequest) -> Job:
    """Wait for ``job`` without blocking the event loop; cancel it if the client hangs up.
    Raises the HTTP error its failure calls for."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def wake() -> None:  # from the worker thread
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(done.set)

    job.when_finished(wake)
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), DISCONNECT_POLL_SECONDS)
        if not done.is_set() and await request.is_disconnected():
            job.cancel()
    if job.state == "failed":
        status = {Cancelled: 503, UsageError: 400}.get(type(job.error), 500)
        raise HTTPException(status, str(job.error))
    return job


def _json_body(content_type: Annotated[str, Header()] = "") -> None:
    """POST bodies are JSON, declared so: a foreign web page cannot send that without the
    browser asking this server first (CORS preflight), and the server never answers yes."""
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise HTTPException(415, "send the body as JSON with Content-Type: application/json")


def _static(name: str, content_type: str):
    body = (importlib.resources.files("lcm_lite") / "static" / name).read_bytes()

    def serve() -> Response:
        return Response(body, media_type=content_type)

    return serve


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
