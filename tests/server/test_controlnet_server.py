"""ControlNet over HTTP: a server started with a ControlNet takes control pictures on its own API
(JSON, base64) and on images/edits (multipart files, lcm-lite's extension), as the pipeline does;
bad control input is a 400 at submission."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from lcm_lite.images.annotators import ANNOTATORS, DEFAULT_THRESHOLDS, annotate
from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
from lcm_lite.server.app import MAX_PICTURE_BODY_BYTES
from lcm_lite.server.running import Server
from lcm_lite.server.schemas import MAX_PICTURE_BASE64_CHARS


def _png(seed: int, size: tuple[int, int] = (64, 64)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def served(controlnet_pipe: LCMPipeline) -> Iterator[Server]:
    with Server(controlnet_pipe, port=0, model="tiny+controlnet") as server:
        yield server


def test_the_own_api_steers_with_the_control_picture_as_the_pipeline_does(
    served: Server, controlnet_pipe: LCMPipeline
) -> None:
    control = _png(1)
    body = {
        "prompt": "a fox",
        "steps": 2,
        "seed": 8,
        "width": 64,
        "height": 64,
        "control_image": base64.b64encode(control).decode(),
        "controlnet_conditioning_scale": [0.6],
        "control_guidance_end": 0.8,
    }
    answer = httpx.post(f"{served.url}api/generate?format=png", json=body, timeout=300)

    assert answer.status_code == 200, answer.text
    alone = controlnet_pipe(
        "a fox", steps=2, seed=8, width=64, height=64, control_image=control,
        controlnet_conditioning_scale=0.6, control_guidance_end=0.8,
    )[0]  # fmt: skip
    assert np.array_equal(_pixels(answer.content), np.asarray(alone))
    assert Image.open(io.BytesIO(answer.content)).text["lcm-lite:controlnets"].endswith(":0.6")


def test_images_edits_takes_control_picture_files_and_the_controlnet_fields(
    served: Server, controlnet_pipe: LCMPipeline
) -> None:
    picture, control = _png(2), _png(3)
    answer = httpx.post(
        f"{served.url}v1/images/edits",
        files=[("image", ("start.png", picture)), ("control_image", ("edges.png", control))],
        data={"prompt": "a boat", "rng_seed": "4", "num_inference_steps": "2", "strength": "0.5",
              "control_preprocess": "canny"},
        timeout=300,
    )  # fmt: skip

    assert answer.status_code == 200, answer.text
    image = base64.b64decode(answer.json()["data"][0]["b64_json"])
    alone = controlnet_pipe(
        "a boat", image=picture, strength=0.5, steps=2, seed=4, control_image=control,
        control_preprocess="canny",
    )[0]  # fmt: skip
    assert np.array_equal(_pixels(image), np.asarray(alone))


def test_a_request_without_a_control_picture_is_not_steered(
    served: Server, f32_pipe: LCMPipeline
) -> None:
    """A server's ControlNets are optional per request: without a control picture the image is
    the one the model makes alone, and its metadata names no ControlNet."""
    body = {"prompt": "a fox", "steps": 2, "seed": 8, "width": 64, "height": 64}
    answer = httpx.post(f"{served.url}api/generate?format=png", json=body, timeout=300)

    assert answer.status_code == 200, answer.text
    alone = f32_pipe("a fox", steps=2, seed=8, width=64, height=64)[0]
    assert np.array_equal(_pixels(answer.content), np.asarray(alone))
    assert "lcm-lite:controlnets" not in Image.open(io.BytesIO(answer.content)).text


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"control_image": "bm90IGEgcGljdHVyZQ=="}, "not a PNG, JPEG or WebP picture"),
        ({"controlnet_conditioning_scale": [0.5, 0.5]}, "2 conditioning scales for 1"),
        ({"controlnet_conditioning_scale": [3.0]}, "less than or equal to 2"),
    ],
)
def test_bad_control_input_is_a_bad_request(served: Server, changes: dict, message: str) -> None:
    body = {"prompt": "a fox", "steps": 1, "control_image": base64.b64encode(_png(1)).decode()}
    answer = httpx.post(f"{served.url}api/jobs", json={**body, **changes}, timeout=60)

    assert answer.status_code == 400, answer.text
    assert message in answer.text


def test_info_lists_the_controlnets_and_the_preprocessors(
    served: Server, controlnet_pipe: LCMPipeline
) -> None:
    info = httpx.get(f"{served.url}api/info", timeout=30).json()

    source = controlnet_pipe.controlnets[0].folder.source
    assert info["controlnets"] == [{"source": str(source), "scale": 1.0}]
    assert info["choices"]["control_preprocess"] == list(ANNOTATORS)
    assert info["defaults"]["canny_thresholds"] == list(DEFAULT_THRESHOLDS)
    scale_limits = info["limits"]["controlnet_conditioning_scale"]
    assert (scale_limits["min"], scale_limits["max"]) == (0.0, 2.0)


@pytest.mark.parametrize(
    ("preprocess", "thresholds"), [("canny", None), ("canny", [50.0, 90.0]), ("invert", None)]
)
def test_the_control_preview_is_the_annotators_picture(
    served: Server, preprocess: str, thresholds: list[float] | None
) -> None:
    photo = _png(5, (72, 40))
    body = {"control_image": base64.b64encode(photo).decode(), "control_preprocess": preprocess}
    if thresholds:
        body["canny_thresholds"] = thresholds
    answer = httpx.post(f"{served.url}api/control-preview", json=body, timeout=60)

    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "image/png"
    made = annotate(Image.open(io.BytesIO(photo)).convert("RGB"), preprocess, thresholds)
    assert np.array_equal(_pixels(answer.content), np.asarray(made))


def test_the_control_preview_without_a_preprocessor_is_the_picture_itself(served: Server) -> None:
    photo = _png(6)
    body = {"control_image": "data:image/png;base64," + base64.b64encode(photo).decode()}
    answer = httpx.post(f"{served.url}api/control-preview", json=body, timeout=60)

    assert answer.status_code == 200, answer.text
    assert np.array_equal(_pixels(answer.content), _pixels(photo))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"control_image": "bm90IGEgcGljdHVyZQ=="}, "not a PNG, JPEG or WebP picture"),
        ({"control_image": "not base64!"}, "control_image must be a picture in base64"),
        ({"control_image": "", "control_preprocess": "blur"}, "control_preprocess"),
        ({"control_image": "", "canny_thresholds": [300.0, 100.0]}, "0 <= low <= high"),
    ],
)
def test_a_bad_control_preview_request_is_a_one_line_bad_request(
    served: Server, body: dict, message: str
) -> None:
    if body["control_image"] == "":
        body = {**body, "control_image": base64.b64encode(_png(7)).decode()}
    if "canny_thresholds" in body:
        body["control_preprocess"] = "canny"
    answer = httpx.post(f"{served.url}api/control-preview", json=body, timeout=60)

    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    assert "\n" not in answer.json()["error"]


def test_the_body_limit_has_room_for_a_control_picture_per_controlnet(served: Server) -> None:
    limits = httpx.get(f"{served.url}api/info", timeout=30).json()["limits"]
    assert limits["picture_body_bytes"] == MAX_PICTURE_BODY_BYTES + MAX_PICTURE_BASE64_CHARS
    # a body over a plain server's limit (a picture and its mask) but within this one's is read
    # (and found not to be JSON), not refused for its size
    answer = httpx.post(
        f"{served.url}api/generate",
        content=b"x" * (MAX_PICTURE_BODY_BYTES + 1),
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    assert answer.status_code == 400, answer.text
    too_large = httpx.post(
        f"{served.url}api/generate",
        content=b"x" * (limits["picture_body_bytes"] + 1),
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    assert too_large.status_code == 413
