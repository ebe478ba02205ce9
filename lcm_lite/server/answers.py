"""What the HTTP API answers, as pydantic models (the OpenAPI document's responses), and the
error bodies of each dialect."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

OPENAI_PATHS = ("/v1/", "/v3/")
A1111_PATHS = ("/sdapi/",)
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
    """An error answer: ``{"error": "<one line>"}``; OpenAI's error object under the OpenAI
    paths (which the ``openai`` client reads into ``APIError.message``, ``.type``); and under
    ``/sdapi/`` AUTOMATIC1111's (its modules/api/api.py ``handle_exception``: the exception's
    type name, its detail, its body, and the message as ``errors``)."""
    if path.startswith(OPENAI_PATHS):
        kind = _OPENAI_ERROR_TYPES.get(status, "server_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}
    if path.startswith(A1111_PATHS):
        return {"error": "HTTPException", "detail": message, "body": "", "errors": message}
    return {"error": message}


class ErrorAnswer(BaseModel):
    """Every error of ``/api/...`` and of the page: one line."""

    error: str


class A1111ErrorAnswer(BaseModel):
    """Every error of ``/sdapi/...``, in AUTOMATIC1111's shape."""

    error: str
    detail: str
    body: str
    errors: str


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


class ServedControlNet(BaseModel):
    source: str = Field(description="its folder or hub id (serve --controlnet DIR[:SCALE])")
    scale: float = Field(description="its conditioning scale when a request gives none")


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
    controlnets: list[ServedControlNet] = Field(
        description="the ControlNets loaded, in order: a request gives a control_image for each"
    )
    defaults: dict[str, int | float | list[float]]
    limits: dict[str, Limit | int]
    choices: dict[str, list[str]] = Field(description="the values each choice field takes")
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
