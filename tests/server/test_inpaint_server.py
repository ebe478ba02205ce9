"""Inpainting over HTTP: ``mask`` on lcm-lite's own API (white repaints, as the Python API) and on
the OpenAI / OVMS ``images/edits`` (with alpha: OpenAI's rule, transparent repaints; without:
white repaints), called by the official ``openai`` client against a live ``lcm-lite serve``."""
# ruff: noqa: F811

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image
from test_openai_api import TOKEN, a_picture, client, decoded, server  # noqa: F401 (fixture)
from test_server import call

from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
from lcm_lite.server.running import Server

openai = pytest.importorskip("openai")
BOX = (40, 8, 72, 56)  # the area to repaint, in the 80x72 picture
SETTINGS = {"rng_seed": 31, "num_inference_steps": 2, "strength": 1.0}


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def white_on_black() -> Image.Image:
    mask = Image.new("L", (80, 72))
    mask.paste(255, BOX)
    return mask


def transparent_hole() -> Image.Image:
    """OpenAI's kind of mask: opaque, fully transparent where to edit (colour irrelevant)."""
    mask = Image.new("RGBA", (80, 72), (200, 30, 30, 255))
    mask.paste((255, 255, 255, 0), BOX)
    return mask


def _edit(server: Server, picture: bytes, mask: Image.Image, api: str = "v1") -> np.ndarray:
    answer = client(server, api).images.edit(
        image=("start.png", picture, "image/png"),
        mask=("mask.png", png_bytes(mask), "image/png"),
        prompt="a blue cube",
        extra_body=SETTINGS,
    )
    return np.asarray(decoded(answer.data[0].b64_json))


def test_an_alpha_mask_and_a_white_mask_give_the_python_calls_image(
    server: Server, f32_pipe: LCMPipeline
) -> None:
    picture = a_picture()
    alone = f32_pipe(
        "a blue cube", image=picture, mask_image=white_on_black(), strength=1.0, steps=2, seed=31
    )[0]
    without_mask = f32_pipe("a blue cube", image=picture, strength=1.0, steps=2, seed=31)[0]

    alpha = _edit(server, picture, transparent_hole())
    white = _edit(server, picture, white_on_black().convert("RGB"), api="v3")

    assert np.array_equal(alpha, np.asarray(alone))
    assert np.array_equal(white, np.asarray(alone))
    assert not np.array_equal(alpha, np.asarray(without_mask))


def test_the_inverted_alpha_mask_repaints_the_other_area(server: Server) -> None:
    picture = a_picture()
    inverted = transparent_hole()
    inverted.putalpha(Image.eval(inverted.getchannel("A"), lambda value: 255 - value))

    assert not np.array_equal(
        _edit(server, picture, transparent_hole()), _edit(server, picture, inverted)
    )


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (Image.new("RGBA", (80, 72), (0, 0, 0, 255)), "the mask is empty"),  # nothing transparent
        (Image.new("L", (80, 72)), "the mask is empty"),
    ],
)
def test_a_mask_with_nothing_to_repaint_is_a_bad_request(
    server: Server, mask: Image.Image, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        _edit(server, a_picture(), mask)
    assert message in refused.value.message


def test_the_own_api_takes_a_base64_mask_white_repaints(
    server: Server, f32_pipe: LCMPipeline
) -> None:
    picture = a_picture()
    body = {
        "prompt": "a blue cube",
        "image": base64.b64encode(picture).decode(),
        "mask": base64.b64encode(png_bytes(white_on_black())).decode(),
        "mask_blur": 2,
        "strength": 1.0,
        "steps": 2,
        "seed": 31,
    }
    reply = call(server.url, "POST", "/api/generate", body, headers=_auth())
    assert reply.status == 200, reply.body
    result = reply.json()
    image = Image.open(io.BytesIO(base64.b64decode(result["images"][0]["png_base64"])))
    alone = f32_pipe(
        "a blue cube",
        image=picture,
        mask_image=white_on_black(),
        mask_blur=2,
        strength=1.0,
        steps=2,
        seed=31,
    )[0]

    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(alone))
    assert result["mask_blur"] == 2
    assert image.text["lcm-lite:mask_sha256"]


def test_the_own_api_refuses_a_mask_without_a_picture(server: Server) -> None:
    body = {"prompt": "x", "mask": base64.b64encode(png_bytes(white_on_black())).decode()}
    reply = call(server.url, "POST", "/api/generate", body, headers=_auth())
    assert reply.status == 400
    assert "mask_image needs image" in reply.json()["error"]


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}
