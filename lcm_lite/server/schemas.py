"""What the HTTP API accepts and answers, as pydantic models: they validate every field, and
FastAPI turns them into the 400 messages and the OpenAPI document at ``/openapi.json``.

The request models are derived from the declared ``Request`` (``lcm_lite.request``): each field
served over HTTP, under its ``key``, with the server's limits (``Spec.served``) and its help as
the description. Two dialects: lcm-lite's own (``/api/...``, the names of the CLI's options,
unknown fields refused) and the OpenAI / OpenVINO Model Server images API (``/v1/images/...``,
``/v3/...``: OpenAI's names (``Spec.openai``), OVMS's extras, and lcm-lite's ``negative_prompt``
and ``vae``; fields that do not apply are ignored, as OVMS does).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Collection
from dataclasses import MISSING, fields
from typing import Annotated, Any, Literal

from annotated_types import Interval, Len, MultipleOf
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    create_model,
    model_validator,
)

from lcm_lite.errors import UsageError
from lcm_lite.fields import Range, Spec, picture_fields, specs
from lcm_lite.images.annotators import DEFAULT_THRESHOLDS
from lcm_lite.request import Request
from lcm_lite.sampling.torch_rng import random_seed

MAX_PROMPT_CHARS = 1000
MAX_PICTURE_BYTES = 8 * 1024 * 1024  # a starting picture's file (PNG, JPEG or WebP)
MAX_PICTURE_BASE64_CHARS = 4 * -(-MAX_PICTURE_BYTES // 3) + 64  # and a data: URL's prefix
JSON_EXACT_INTEGERS = 2**53  # JSON Schema tools compare in floating point
MAX_LIST_ITEMS = 16  # the numbers of a ``numbers`` field (a weight per LoRA, a scale per ...)


def served_limits(field_spec: Spec) -> Range | None:
    return field_spec.served or field_spec.limits


def served_specs(declared: type = Request) -> dict[str, Spec]:
    """The fields of ``declared`` the server takes, each under its ``key``."""
    return {
        name: field_spec
        for name, field_spec in specs(declared).items()
        if field_spec.key is not None and field_spec.served_over_http
    }


SERVED = served_specs()
INTEGER_LIMITS = {  # key: (min, max, multiple of) of the sizes, steps and counts served
    field_spec.key: (int(limits.low), int(limits.high), limits.multiple_of or 1)
    for field_spec in SERVED.values()
    if field_spec.kind == "integer"
    and (limits := served_limits(field_spec)) is not None
    and limits.high is not None
    and limits.high < JSON_EXACT_INTEGERS
}
DEFAULTS: dict[str, Any] = {  # what a field missing from a request is (/api/info, the page)
    SERVED[item.name].key: SERVED[item.name].fallback if item.default is None else item.default
    for item in fields(Request)
    if item.name in SERVED
    and SERVED[item.name].kind in ("integer", "number")
    and (item.default is not None or SERVED[item.name].fallback is not None)
}


DEFAULTS["canny_thresholds"] = list(DEFAULT_THRESHOLDS)  # the annotator's, when none is given
CHOICES = {  # key: the choices of each choice field (/api/info, the page's lists)
    field_spec.key: list(field_spec.choices)
    for field_spec in SERVED.values()
    if field_spec.kind == "choice"
}
LIMITS = {  # key: {min, max[, multiple_of]} (of each number of a list), as /api/info shows them
    field_spec.key: {
        "min": limits.low,
        "max": limits.high - 1 if limits.high_exclusive else limits.high,
        **({"multiple_of": limits.multiple_of or 1} if field_spec.kind == "integer" else {}),
    }
    for field_spec in SERVED.values()
    if field_spec.kind in ("integer", "number", "numbers")
    and (limits := served_limits(field_spec)) is not None
    and limits.high is not None
}


def whole_number(value: object) -> object:
    """JSON Schema's integer: 64.0 is 64 (strings and booleans stay refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Prompt = Annotated[  # empty or blank allowed, as in diffusers; NUL is not (the pipeline says so)
    str,
    StringConstraints(max_length=MAX_PROMPT_CHARS),
    Field(json_schema_extra={"pattern": "^[^\\x00]*$"}),
]
Picture = Annotated[
    str,
    Field(
        max_length=MAX_PICTURE_BASE64_CHARS,
        json_schema_extra={  # checked when decoded, with a clearer message than a pattern's
            "pattern": "^(data:image/[a-z]+;base64,)?[A-Za-z0-9+/]*={0,2}$",
            "contentEncoding": "base64",
        },
    ),
]


def json_type(field_spec: Spec) -> Any:
    """A field's JSON type with its served limits, in the JSON schema too."""
    limits = served_limits(field_spec)
    if field_spec.kind == "text":
        return Prompt
    if field_spec.kind == "picture" and field_spec.repeatable:  # one, or one per ControlNet
        return Picture | Annotated[list[Picture], Len(1, MAX_LIST_ITEMS)]
    if field_spec.kind == "picture":
        return Picture
    if field_spec.kind == "choice":
        return Literal[field_spec.choices]
    if field_spec.kind == "integer":
        high = {"lt" if limits and limits.high_exclusive else "le": limits and limits.high}
        bounds = [Interval(ge=limits.low, **high)] if limits else []
        if limits and limits.multiple_of:
            bounds.append(MultipleOf(limits.multiple_of))
        if limits and limits.high is not None and limits.high >= JSON_EXACT_INTEGERS:
            # documented up to the largest double below the limit: JSON Schema tools compare
            # in floating point, and 2**64 - 1 rounds up to 2**64
            largest = limits.high - 1 if limits.high_exclusive else limits.high
            documented = int(float(largest))
            documented -= 2048 if documented > largest else 0
            schema = {"type": "integer", "minimum": int(limits.low), "maximum": documented}
            bounds.append(WithJsonSchema(schema))
        return Annotated[(int, *bounds, BeforeValidator(whole_number))]
    if field_spec.kind == "number":
        return _number(limits)
    if field_spec.kind == "numbers":
        return Annotated[list[_number(limits)], Len(1, MAX_LIST_ITEMS)]
    if field_spec.kind == "integers":
        bounds = [] if limits is None else [Interval(ge=limits.low, le=limits.high)]
        whole = Annotated[(int, *bounds, BeforeValidator(whole_number))]
        count = field_spec.count
        return Annotated[list[whole], Len(count or 1, count or MAX_LIST_ITEMS)]
    if field_spec.kind == "flag":
        return bool
    raise ValueError(f"no JSON type for a {field_spec.kind} field")


def _number(limits: Range | None) -> Any:
    """A finite JSON number within ``limits``."""
    bounds = []
    if limits:
        low = {"gt" if limits.low_exclusive else "ge": limits.low}
        bounds.append(Interval(**low, le=limits.high))
    return Annotated[(float, *bounds, AllowInfNan(False))]


def _description(field_spec: Spec) -> str:
    shown = f" (default: {field_spec.default_help})" if field_spec.default_help else ""
    return field_spec.help + shown


def derived_fields(declared: type, names: dict[str, str]) -> dict[str, Any]:
    """pydantic field definitions ``{http name: (type, Field)}`` for the fields of ``declared``
    (a ``Request`` dataclass) named in ``names`` (field name -> HTTP name)."""
    defaults = {item.name: item.default for item in fields(declared)}
    derived = {}
    for name, http_name in names.items():
        field_spec = specs(declared)[name]
        default = defaults[name]
        kind = json_type(field_spec)
        required = default is MISSING
        annotation = kind if required or default is not None else kind | None
        derived[http_name] = (
            annotation,
            Field(... if required else default, description=_description(field_spec)),
        )
    return derived


class _OwnApiRequest(BaseModel):
    """What ``GenerateRequest`` adds to the derived fields: the server's own options and the
    translation to a ``Request``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    previews: bool = Field(False, description="keep each step's preview (needs --tiny-vae)")

    @model_validator(mode="after")
    def _pipeline_accepts_it(self) -> _OwnApiRequest:
        self.to_request().check()  # the pipeline's own checks (NUL, UTF-8) now, not in the worker
        return self

    def to_request(self, declared: type = Request) -> Request:
        """The ``Request`` this body asks for: HTTP names to field names, the picture decoded,
        a missing seed drawn (below 2**53, so that JavaScript reads it exactly)."""
        values = {
            name: getattr(self, field_spec.key)
            for name, field_spec in specs(declared).items()
            if field_spec.key in type(self).model_fields
        }
        for name, field_spec in specs(declared).items():  # image, mask, control_image
            value = values.get(name)
            if field_spec.kind == "picture" and isinstance(value, list):
                values[name] = [decode_picture(item, field_spec.key) for item in value]
            elif field_spec.kind == "picture" and value is not None:
                values[name] = decode_picture(value, field_spec.key)
        if values.get("seed") is None:
            values["seed"] = random_seed()
        return declared(**values)


def own_api_model(declared: type = Request) -> type[_OwnApiRequest]:
    """``POST /api/generate`` and ``/api/jobs``'s body: every field of ``declared`` served over
    HTTP under its ``key`` (the CLI's option names), JSON types exactly, unknown fields refused."""
    served = {name: field_spec.key for name, field_spec in served_specs(declared).items()}
    return create_model(
        "GenerateRequest",
        __base__=_OwnApiRequest,
        __doc__="``POST /api/generate`` and ``/api/jobs``: the CLI's options, JSON types exactly.",
        **derived_fields(declared, served),
    )


GenerateRequest = own_api_model()


# control_preprocess and the fields that need it (canny_thresholds)
_PREPROCESSING = [
    name
    for name, field_spec in SERVED.items()
    if name == "control_preprocess" or field_spec.needs == "control_preprocess"
]


class _ControlPreview(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


ControlPreviewRequest = create_model(
    "ControlPreviewRequest",
    __base__=_ControlPreview,
    __doc__="``POST /api/control-preview``: one control picture and how a job would make the "
    "ControlNet's picture from it (the fields of ``/api/generate``).",
    **{
        SERVED["control_image"].key: (
            Picture,
            Field(description="one picture, as a control_image of /api/generate (base64)"),
        )
    },
    **derived_fields(Request, {name: SERVED[name].key for name in _PREPROCESSING}),
)


def decode_picture(text: str, name: str = "image") -> bytes:
    """A picture's bytes (the field ``name``'s) from base64, or from a ``data:image/...;base64,``
    URL."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        picture = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or characters that are not ASCII
        raise ValueError(f"{name} must be a picture in base64 (or a data: URL)") from None
    return check_picture_size(picture)


def check_picture_size(picture: bytes) -> bytes:
    if len(picture) > MAX_PICTURE_BYTES:
        raise UsageError(f"the picture must be at most {MAX_PICTURE_BYTES} bytes")
    return picture


_SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")  # ASCII digits only: \d takes any script's
_SIDE = INTEGER_LIMITS["width"]
_SIDES = "|".join(map(str, range(_SIDE[0], _SIDE[1] + 1, _SIDE[2])))  # as a JSON Schema


MAX_PARTIAL_IMAGES = 3  # OpenAI's most


class _OpenAIRequest(BaseModel):
    """OpenAI's own fields and OVMS's extras, which have no ``Request`` field of their own:
    ``size`` "auto" or missing is the model's own size, as in OVMS; ``model`` is accepted
    whatever it names (one model is served); OpenAI fields that do not apply (``quality``,
    ``style``, ``user``, ...) are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    n: json_type(SERVED["num_images"]) | None = None
    size: str | None = Field(
        None,
        examples=["512x512"],
        json_schema_extra={"pattern": f"^(auto|({_SIDES})x({_SIDES}))$"},  # checked in _check
    )
    response_format: Literal["b64_json"] | None = Field(
        None, description="b64_json only: lcm-lite keeps no images to link to"
    )
    num_images_per_prompt: json_type(SERVED["num_images"]) | None = Field(
        None, description="the same as n"
    )
    output_format: Literal["png"] | None = Field(None, description="PNG only")
    stream: bool | None = Field(
        None,
        description="answer with server-sent events: partial_images previews of the steps "
        "(``image_generation.partial_image``, ``image_edit.partial_image``), then each image "
        "(``...completed``)",
    )
    partial_images: (
        Annotated[int, Interval(ge=0, le=MAX_PARTIAL_IMAGES), BeforeValidator(whole_number)] | None
    ) = Field(
        None,
        description="when streamed: at most this many previews of the steps, decoded by the "
        "tiny VAE (needs --tiny-vae); fewer when there are fewer steps (default 0)",
    )

    @model_validator(mode="after")
    def _check(self) -> _OpenAIRequest:
        if None not in (self.n, self.num_images_per_prompt) and self.n != (
            self.num_images_per_prompt
        ):
            raise ValueError("n and num_images_per_prompt differ; give one of them")
        low, high, multiple = _SIDE
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

    def to_request(
        self,
        native_size: int | None,
        picture: bytes | None = None,
        mask: bytes | None = None,
        control_pictures: list[bytes] | None = None,
    ) -> Request:
        """The ``Request`` this body asks for; ``native_size`` where ``size`` is auto or missing
        (None: the picture's own), a missing ``rng_seed`` drawn; ``mask``: white is the area to
        repaint; ``control_pictures``: one per ControlNet (an extension of images/edits)."""
        match = _SIZE.fullmatch(self.size or "auto")
        width, height = (int(match[1]), int(match[2])) if match else (native_size, native_size)
        values = {
            name: getattr(self, field_spec.openai)
            for name, field_spec in specs(Request).items()
            if field_spec.openai in type(self).model_fields
        }
        if values.get("seed") is None:
            values["seed"] = random_seed()
        request = Request(
            values.pop("prompt"),
            **values,
            width=width,
            height=height,
            num_images=self.n or self.num_images_per_prompt or 1,
            image=None if picture is None else check_picture_size(picture),
            mask_image=mask,
            control_image=None
            if not control_pictures
            else [check_picture_size(control) for control in control_pictures],
        )
        request.check()
        return request


def _openai_names(with_picture: bool) -> dict[str, str]:
    """The fields with an OpenAI name (``Spec.openai``); those that need the picture
    (``strength``) only ``with_picture``."""
    return {
        name: field_spec.openai
        for name, field_spec in specs(Request).items()
        if field_spec.openai and (with_picture or not field_spec.needs)
    }


ImageGenerationRequest = create_model(
    "ImageGenerationRequest",
    __base__=_OpenAIRequest,
    __doc__="``POST /v1/images/generations`` (and OVMS's ``/v3/...``): OpenAI's fields and "
    "OVMS's extras.",
    **derived_fields(Request, _openai_names(with_picture=False)),
)


class _OpenAIForm(_OpenAIRequest):
    model_config = ConfigDict(extra="ignore", strict=False)  # form fields are text: parsed


ImageEditRequest = create_model(
    "ImageEditRequest",
    __base__=_OpenAIForm,
    __doc__="The form fields of ``POST /v1/images/edits`` (and ``/v3/...``), beside the "
    "``image`` file: those of a generation, and ``strength``; ``size`` auto or missing is the "
    "picture's own size (rounded down to a multiple of 8; a picture that makes a side under "
    f"{_SIDE[0]} or over {_SIDE[1]} needs a size). A picture over the server's pixel limit "
    "(``picture_pixels`` in /api/info) is refused from its header, before it is decoded.",
    **derived_fields(Request, _openai_names(with_picture=True)),
)


class PngImage(BaseModel):
    index: int
    png_base64: str


class _JobState(BaseModel):
    """A job's own fields; ``JobView`` adds the request's."""

    id: str
    state: Literal["queued", "running", "done", "failed"]
    step: int
    previews: bool
    preview_png_base64: str | None = Field(
        None, description="the latest step's preview of the first image, while it runs"
    )
    seconds: float | None = None
    timings: dict[str, float] | None = None
    images: list[PngImage] | None = None
    error: str | None = None


def job_view_model(declared: type = Request) -> type[_JobState]:
    """A job as the API shows it: the request's served fields (the seed used; ``strength`` only
    with a picture, whose bytes are not shown), its state and steps done; once done its images
    and times, once failed its error. A field that always has a value (a default, or drawn at
    submission as the seed) is required."""
    defaults = {item.name: item.default for item in fields(declared)}
    shown = {}
    for name, field_spec in served_specs(declared).items():
        if field_spec.kind == "picture":
            continue
        kind = Literal[field_spec.choices] if field_spec.choices else _VIEW_TYPES[field_spec.kind]
        # a size is null while an image-to-image job waits: its picture decides it
        always = name in _DRAWN or (defaults[name] is not None and not field_spec.needs)
        shown[field_spec.key] = (
            (kind, Field(description=field_spec.help))
            if always
            else (kind | None, Field(None, description=field_spec.help))
        )
    return create_model("JobView", __base__=_JobState, **shown)


_VIEW_TYPES: dict[str, Any] = {
    "text": str,
    "integer": int,
    "number": float,
    "numbers": list[float],
    "flag": bool,
    "integers": list[int],
}
_DRAWN = {"seed"}  # a missing one is drawn at submission (``to_request``)


def shown_fields(request: Any, given_pictures: Collection[str] | None = None) -> dict[str, Any]:
    """The values ``JobView`` shows of ``request`` (one prompt: a job has one), under their HTTP
    names; a field whose ``needs`` is missing shows as None (``given_pictures``: the picture
    fields given, when their bytes are gone; default: those that are not None)."""
    given = {
        name: getattr(request, name) is not None
        if given_pictures is None
        else name in given_pictures
        for name in picture_fields(type(request))
    }
    shown = {}
    for name, field_spec in served_specs(type(request)).items():
        value = getattr(request, name)
        if field_spec.kind == "picture":
            continue
        if value is None and not given["image"]:
            value = field_spec.fallback  # 512 for the size of a text-to-image job, until it runs
        if field_spec.needs and not given.get(
            field_spec.needs, getattr(request, field_spec.needs) is not None
        ):
            value = None
        elif field_spec.kind == "text" and isinstance(value, (list, tuple)):
            value = value[0]
        shown[field_spec.key] = value
    return shown


JobView = job_view_model()
