"""schemathesis against ``/openapi.json`` of a live ``lcm-lite serve`` on the tiny model:
generated requests, valid and invalid, to every documented operation; no answer is a 5xx, and
every answer conforms to the document (status, content type, body schema)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import pytest
from PIL import Image

from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
from lcm_lite.request import MAX_IMAGES
from lcm_lite.server.running import Server
from lcm_lite.server.schemas import INTEGER_LIMITS

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402 - once schemathesis is there
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import negative_data_rejection  # noqa: E402

EXAMPLES_PER_OPERATION = 25  # bounded: the run takes about a minute on two cores
REQUEST_TIMEOUT_SECONDS = 60


def _range(low: int, high: int, multiple: int = 1) -> range:
    return range(low, high + 1, multiple)


CHEAPEST = {  # per dialect: the cheapest valid generation (the defaults would be 512x512)
    "/api/": {"width": 64, "height": 64, "steps": 1, "num_images": 1},
    "/images/": {"size": "64x64", "num_inference_steps": 1, "n": 1, "num_images_per_prompt": 1},
    "/sdapi/": {"width": 64, "height": 64, "steps": 1, "batch_size": 1, "n_iter": 1},
}
ALLOWED = {  # what a valid value of each looks like
    **{name: _range(*limits) for name, limits in INTEGER_LIMITS.items()},
    "num_inference_steps": _range(*INTEGER_LIMITS["steps"]),
    "n": _range(*INTEGER_LIMITS["num_images"]),
    "num_images_per_prompt": _range(*INTEGER_LIMITS["num_images"]),
    "batch_size": _range(*INTEGER_LIMITS["num_images"]),
    "n_iter": _range(1, MAX_IMAGES),  # A1111's batches: not a served limit
    "/sdapi/ steps": range(1, 2**63),  # A1111's: any, above the served most taken as the most
    "size": {f"{w}x{h}" for w in _range(*INTEGER_LIMITS["width"]) for h in _range(64, 1024, 8)}
    | {"auto"},
}


PICTURE = io.BytesIO()
Image.effect_noise((64, 64), 60).convert("RGB").save(PICTURE, format="PNG")
PICTURE = PICTURE.getvalue()
PICTURE_BASE64 = base64.b64encode(PICTURE).decode()


@pytest.fixture(scope="module")
def server(previews_pipe: LCMPipeline) -> Iterator[Server]:
    with Server(previews_pipe, port=0, capacity=32, model="tiny") as server:  # previews, vae tiny
        yield server


def cheapest(path: str, body: object, mode: GenerationMode) -> object:
    """A generation request with every missing or valid size, step and image count replaced by
    the cheapest valid one (so that the run stays bounded); invalid values stay, to be refused.
    In valid requests, an upload's bytes become a real picture, a strength below the steps'
    minimum (a rule between two fields that JSON Schema cannot state; the description says it)
    the default, and a negative prompt and control pictures go (this model cannot take a negative
    prompt, this server has no ControlNet; the descriptions say which can), as do LoRA weights
    (one per LoRA loaded, the description says: none is) and masks (of the picture's shape, not
    empty: a rule between two fields and pixels that JSON Schema cannot state).
    """
    if not isinstance(body, dict):
        return body
    cheap = dict(body)
    if mode == GenerationMode.POSITIVE:
        if isinstance(body.get("image"), (str, bytes)):  # JSON Schema cannot say "a picture"
            cheap["image"] = PICTURE if path.endswith("/images/edits") else PICTURE_BASE64
        for name in ("strength", "denoising_strength"):  # lcm-lite's and A1111's
            strength = body.get(name)
            if type(strength) in (int, float) and 0 < strength < 1 / 50:
                cheap[name] = 0.8
        cheap.pop("negative_prompt", None)  # a latent consistency model refuses one (documented)
        cheap.pop("lora_weights", None)  # one per LoRA loaded, and this server loads none
        if path.endswith("/control-preview"):  # a picture to make the control picture from
            cheap["control_image"] = PICTURE_BASE64
            if isinstance(body.get("canny_thresholds"), list):  # low <= high (documented)
                cheap["canny_thresholds"] = sorted(body["canny_thresholds"])
        else:
            cheap.pop("control_image", None)  # needs a server with --controlnet (documented)
        cheap.pop("mask", None)  # must fit its picture and hold something to repaint (documented)
        cheap.pop("clip_skip", None)  # at most the model's text encoder layers (documented)
        if isinstance(body.get("init_images"), list):  # A1111's pictures, likewise
            cheap["init_images"] = [PICTURE_BASE64]
        if body.get("outpaint") == [0, 0, 0, 0] or body.get("image") is None:
            cheap.pop("outpaint", None)  # margins not all 0, and a picture to extend (documented)
        if "outpaint" in cheap:
            cheap["strength"] = 1.0  # int(steps * strength) steps run: at 1 step, strength 1
        cheap.pop("override_settings", None)  # A1111's clip skip: at most the encoder's layers
    for dialect, values in CHEAPEST.items():
        if dialect in path:
            for name, value in values.items():
                allowed = ALLOWED.get(f"{dialect} {name}", ALLOWED[name])
                if body.get(name) is None or _is_one_of(body[name], allowed):  # None: default
                    cheap[name] = value
    return cheap


def _is_one_of(value: object, allowed: range | set[str]) -> bool:
    """``value in allowed`` for a JSON integer (64.0 is 64) or string; a float that is not whole
    is not looked for (``range`` would compare it with every member)."""
    if type(value) is float and value.is_integer():
        value = int(value)
    return type(value) in (int, str) and value in allowed


def check_answers(operation, mode: GenerationMode) -> None:
    """Up to EXAMPLES_PER_OPERATION requests of ``mode`` to ``operation``; each answer checked."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        phases=(Phase.explicit, Phase.generate),  # no shrinking: bounded time
    )
    def answers_conform(case) -> None:
        case.body = cheapest(operation.path, case.body, mode)
        excluded = []
        if operation.path.endswith("/images/edits"):
            # the upload, now a real picture's bytes, is no JSON string: the check that an
            # invalid request was refused would count it as invalid
            excluded.append(negative_data_rejection)
        case.call_and_validate(timeout=REQUEST_TIMEOUT_SECONDS, excluded_checks=excluded)

    answers_conform()


@pytest.mark.slow
def test_every_answer_conforms_to_the_openapi_document_and_none_is_a_server_error(
    server: Server,
) -> None:
    api = schemathesis.openapi.from_url(f"{server.url}openapi.json")
    labels = []
    for result in api.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        check_answers(operation, GenerationMode.POSITIVE)
        if operation.path.endswith("/images/edits"):
            # A form carries text: "invalid types" are no such thing there. Its refusals are
            # tested in test_openai_api and test_server_load (malformed multipart).
            continue
        try:
            check_answers(operation, GenerationMode.NEGATIVE)
        except Unsatisfiable:
            assert not (operation.body or operation.query)  # no inputs: nothing invalid to send
    assert {"POST /v1/images/generations", "POST /v1/images/edits", "POST /api/jobs"} <= set(labels)
