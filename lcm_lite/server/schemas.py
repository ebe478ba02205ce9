"""What the HTTP API accepts and answers, as pydantic models: they validate every field, and
FastAPI turns them into the 400 messages and the OpenAPI document at ``/openapi.json``.

Two dialects: lcm-lite's own (``/api/...``, the names of the CLI's options, unknown fields
refused) and the OpenAI / OpenVINO Model Server images API (``/v1/images/...``,
``/v3/images/...``: OpenAI's names, OVMS's extras, and lcm-lite's ``negative_prompt`` and
``vae``; fields that do not apply are ignored, as OVMS does).
"""

from __future__ import annotations

import base64
import dataclasses
import re
import secrets
from typing import Annotated, Literal

from annotated_types import Interval, MultipleOf
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from lcm_lite.errors import UsageError
from lcm_lite.request import DEFAULT_SIZE, check_arguments
from lcm_lite.server.jobs import Request

MAX_PROMPT_CHARS = 1000
MAX_PICTURE_BYTES = 8 * 1024 * 1024  # a starting picture's file (PNG, JPEG or WebP)
MAX_PICTURE_BASE64_CHARS = 4 * -(-MAX_PICTURE_BYTES // 3) + 64  # and a data: URL's prefix
SEED_LIMIT = 2**64
INTEGER_LIMITS = {
    "width": (64, 1024, 8),
    "height": (64, 1024, 8),
    "steps": (1, 8, 1),
    "num_images": (1, 4, 1),
}  # name: (min, max, multiple of)
GUIDANCE_LIMITS = (0.0, 20.0)
DEFAULTS: dict[str, int | float] = {
    "width": DEFAULT_SIZE,
    "height": DEFAULT_SIZE,
    "steps": 4,
    "guidance": 8.0,
    "num_images": 1,
}


def _whole_number(value: object) -> object:
    """JSON Schema's integer: 64.0 is 64 (strings and booleans stay refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _integer(low: int, high: int, multiple: int = 1) -> object:
    """An integer type with its range, in the JSON schema too."""
    return Annotated[
        int, Interval(ge=low, le=high), MultipleOf(multiple), BeforeValidator(_whole_number)
    ]


Prompt = Annotated[  # empty or blank allowed, as in diffusers; NUL is not (the pipeline says so)
    str,
    StringConstraints(max_length=MAX_PROMPT_CHARS),
    Field(json_schema_extra={"pattern": "^[^\\x00]*$"}),
]
Size = _integer(*INTEGER_LIMITS["width"])
Steps = _integer(*INTEGER_LIMITS["steps"])
NumImages = _integer(*INTEGER_LIMITS["num_images"])
Seed = Annotated[
    int,
    Interval(ge=0, lt=SEED_LIMIT),
    BeforeValidator(_whole_number),
    # The document says up to 2**64 - 2048, the largest double below 2**64: JSON Schema tools
    # compare in floating point, and 2**64 - 1 rounds up to 2**64.
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": SEED_LIMIT - 2048}),
]
Strength = Annotated[
    float,
    Interval(gt=0, le=1),
    AllowInfNan(False),
    Field(
        description="image to image; at least steps / 50 (the steps come from the last "
        "int(50 * strength) of the 50 distillation timesteps)"
    ),
]
Vae = Literal["full", "tiny"]
NEGATIVE_PROMPT = (
    "classifier-free guidance's negative prompt: for a plain Stable Diffusion model with "
    "LCM-LoRA at guidance above 1 (a latent consistency model refuses it: its guidance is "
    "distilled)"
)
VAE = "the final decoder (and image to image's encoder); tiny needs a server with --tiny-vae"
Guidance = Annotated[
    float,
    Interval(ge=GUIDANCE_LIMITS[0], le=GUIDANCE_LIMITS[1]),
    AllowInfNan(False),
]


def random_seed() -> int:
    """A seed below 2**53, so that JavaScript reads it exactly."""
    return secrets.randbits(53)


def _checked(request: Request) -> Request:
    """The pipeline's own checks (NUL, UTF-8) now, rather than in the worker."""
    check_arguments(
        [request.prompt, *filter(None, [request.negative_prompt])],
        request.steps,
        request.guidance,
        request.width or DEFAULT_SIZE,  # the picture's size is checked when it is decoded
        request.height or DEFAULT_SIZE,
        request.num_images,
    )
    return request


class GenerateRequest(BaseModel):
    """``POST /api/generate`` and ``/api/jobs``: the CLI's options, JSON types exactly."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: Prompt
    seed: Seed | None = Field(None, description="random (below 2**53) when missing or null")
    width: Size | None = Field(None, description="512, or the picture's own (image to image)")
    height: Size | None = None
    guidance: Guidance = DEFAULTS["guidance"]
    steps: Steps = DEFAULTS["steps"]
    num_images: NumImages = DEFAULTS["num_images"]
    image: str | None = Field(
        None,
        max_length=MAX_PICTURE_BASE64_CHARS,
        json_schema_extra={  # checked when decoded, with a clearer message than a pattern's
            "pattern": "^(data:image/[a-z]+;base64,)?[A-Za-z0-9+/]*={0,2}$",
            "contentEncoding": "base64",
        },
        description=f"image to image: the starting picture (PNG, JPEG or WebP, at most "
        f"{MAX_PICTURE_BYTES} bytes), base64, optionally as a data: URL",
    )
    strength: Strength = 0.8
    vae: Vae = Field("full", description=VAE)
    previews: bool = Field(False, description="keep each step's preview (needs --tiny-vae)")
    negative_prompt: Prompt | None = Field(None, description=NEGATIVE_PROMPT)

    @model_validator(mode="after")
    def _pipeline_accepts_it(self) -> GenerateRequest:
        self.job_request()
        return self

    def job_request(self) -> Request:
        picture = None if self.image is None else decode_picture(self.image)
        default = None if picture is not None else DEFAULT_SIZE
        return _checked(
            Request(
                prompt=self.prompt,
                seed=random_seed() if self.seed is None else self.seed,
                width=default if self.width is None else self.width,
                height=default if self.height is None else self.height,
                guidance=self.guidance,
                steps=self.steps,
                num_images=self.num_images,
                image=picture,
                strength=self.strength,
                vae=self.vae,
                previews=self.previews,
                negative_prompt=self.negative_prompt,
            )
        )


def decode_picture(text: str) -> bytes:
    """A picture's bytes from base64, or from a ``data:image/...;base64,`` URL."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        picture = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or characters that are not ASCII
        raise ValueError("image must be a picture in base64 (or a data: URL)") from None
    return check_picture_size(picture)


def check_picture_size(picture: bytes) -> bytes:
    if len(picture) > MAX_PICTURE_BYTES:
        raise UsageError(f"the picture must be at most {MAX_PICTURE_BYTES} bytes")
    return picture


_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")
_SIDES = "|".join(map(str, range(64, 1025, 8)))  # INTEGER_LIMITS["width"], as a JSON Schema


class ImageGenerationRequest(BaseModel):
    """``POST /v1/images/generations`` (and OVMS's ``/v3/...``): OpenAI's fields and OVMS's
    extras. ``size`` "auto" or missing is the model's own size, as in OVMS; ``model`` is
    accepted whatever it names (one model is served); OpenAI fields that do not apply
    (``quality``, ``style``, ``user``, ...) are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    prompt: Prompt
    model: str | None = None
    n: NumImages | None = None
    size: str | None = Field(
        None,
        examples=["512x512"],
        json_schema_extra={"pattern": f"^(auto|({_SIDES})x({_SIDES}))$"},  # checked in _check
    )
    response_format: Literal["b64_json"] | None = Field(
        None, description="b64_json only: lcm-lite keeps no images to link to"
    )
    num_inference_steps: Steps = DEFAULTS["steps"]
    guidance_scale: Guidance = DEFAULTS["guidance"]
    rng_seed: Seed | None = None
    num_images_per_prompt: NumImages | None = Field(None, description="the same as n")
    negative_prompt: Prompt | None = Field(None, description=NEGATIVE_PROMPT)
    vae: Vae = Field("full", description=VAE)
    output_format: Literal["png"] | None = Field(None, description="PNG only")
    stream: Literal[False] | None = Field(None, description="answers are not streamed")

    @model_validator(mode="after")
    def _check(self) -> ImageGenerationRequest:
        if None not in (self.n, self.num_images_per_prompt) and self.n != (
            self.num_images_per_prompt
        ):
            raise ValueError("n and num_images_per_prompt differ; give one of them")
        low, high, multiple = INTEGER_LIMITS["width"]
        if self.size not in (None, "auto") and not (
            (match := _SIZE.fullmatch(self.size))
            and all(
                low <= int(side) <= high and int(side) % multiple == 0 for side in match.groups()
            )
        ):
            raise ValueError(
                f"size must be auto or WxH with each side from {low} to {high} and a multiple "
                f"of {multiple}, got {self.size!r:.40}"
            )
        return self

    def _size(self, native_size: int | None) -> tuple[int | None, int | None]:
        match = _SIZE.fullmatch(self.size or "auto")
        return (int(match[1]), int(match[2])) if match else (native_size, native_size)

    def job_request(self, native_size: int) -> Request:
        width, height = self._size(native_size)
        return _checked(
            Request(
                prompt=self.prompt,
                seed=random_seed() if self.rng_seed is None else self.rng_seed,
                width=width,
                height=height,
                guidance=self.guidance_scale,
                steps=self.num_inference_steps,
                num_images=self.n or self.num_images_per_prompt or 1,
                vae=self.vae,
                negative_prompt=self.negative_prompt,
            )
        )


OPENAI_PATHS = ("/v1/", "/v3/")
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    501: "not_implemented_error",
}


def error_json(path: str, status: int, message: str) -> dict[str, object]:
    """An error answer: ``{"error": "<one line>"}``, or OpenAI's error object under the OpenAI
    paths (which the ``openai`` client reads into ``APIError.message``, ``.type``)."""
    if path.startswith(OPENAI_PATHS):
        kind = _OPENAI_ERROR_TYPES.get(status, "server_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return {"error": message}


class ImageEditRequest(ImageGenerationRequest):
    """The form fields of ``POST /v1/images/edits`` (and ``/v3/...``), beside the ``image`` file:
    those of a generation, and ``strength``; ``size`` "auto" or missing is the picture's own
    size (rounded down to a multiple of 8). Form fields are text: numbers are parsed."""

    model_config = ConfigDict(extra="ignore", strict=False)

    strength: Strength = 0.8

    def edit_request(self, picture: bytes) -> Request:
        width, height = self._size(None)
        request = self.job_request(DEFAULT_SIZE)
        return dataclasses.replace(
            request,
            width=width,
            height=height,
            image=check_picture_size(picture),
            strength=self.strength,
        )


class ErrorAnswer(BaseModel):
    """Every error of ``/api/...`` and of the page: one line."""

    error: str


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorAnswer(BaseModel):
    """Every error of ``/v1/...`` and ``/v3/...``, in OpenAI's shape."""

    error: OpenAIError


class Health(BaseModel):
    status: Literal["ok"]


class PngImage(BaseModel):
    index: int
    png_base64: str


class JobView(BaseModel):
    """A job: the request (with the seed used), its state and steps done; once done its images
    and times, once failed its error."""

    id: str
    state: Literal["queued", "running", "done", "failed"]
    step: int
    prompt: str
    seed: int
    width: int | None
    height: int | None
    guidance: float
    steps: int
    num_images: int
    strength: float | None = Field(None, description="image to image")
    vae: Vae
    previews: bool
    negative_prompt: str | None = None
    preview_png_base64: str | None = Field(
        None, description="the latest step's preview of the first image, while it runs"
    )
    seconds: float | None = None
    timings: dict[str, float] | None = None
    images: list[PngImage] | None = None
    error: str | None = None


class Limit(BaseModel):
    min: int | float
    max: int | float
    multiple_of: int | None = None


class QueueState(BaseModel):
    capacity: int
    waiting: int
    running: bool
    done: int = Field(description="jobs finished since the start")
    failed: int
    cancelled: int = Field(description="by their client hanging up, or by a second Ctrl+C")


class Info(BaseModel):
    model: str
    device: str
    version: str
    native_size: int
    previews: bool = Field(description="whether a tiny VAE is loaded: previews, vae tiny")
    negative_prompt: bool = Field(
        description="whether the model takes negative_prompt (a plain Stable Diffusion model "
        "with LCM-LoRA does; a latent consistency model does not)"
    )
    defaults: dict[str, int | float]
    limits: dict[str, Limit | int]
    queue: QueueState


class B64Image(BaseModel):
    b64_json: str


class ImagesAnswer(BaseModel):
    """OpenAI's images answer."""

    created: int
    data: list[B64Image]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "lcm-lite"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
