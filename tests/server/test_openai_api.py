"""The OpenAI / OpenVINO Model Server images API, called by the official ``openai`` client
against a live ``lcm-lite serve`` on the tiny model."""

from __future__ import annotations

import base64
import io
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
from lcm_lite.server.running import Server

openai = pytest.importorskip("openai")
TOKEN = "an-openai-style-api-key"


@pytest.fixture(scope="module")
def server(f32_pipe: LCMPipeline) -> Iterator[Server]:
    with Server(f32_pipe, port=0, token=TOKEN, capacity=2, model="tiny") as server:
        yield server


def client(server: Server, api: str = "v1", api_key: str = TOKEN) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}{api}", api_key=api_key, max_retries=0)


def decoded(b64_json: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64_json)))
    image.load()
    return image


def test_images_generate_gives_the_asked_size_count_and_settings_in_the_png(
    server: Server,
) -> None:
    answer = client(server).images.generate(
        model="tiny",
        prompt="a red cube on a table",
        n=2,
        size="64x96",
        extra_body={"rng_seed": 1234, "num_inference_steps": 2, "guidance_scale": 6.5},
    )
    assert answer.created > 0 and len(answer.data) == 2
    for index, item in enumerate(answer.data):
        image = decoded(item.b64_json)
        assert (image.format, image.size) == ("PNG", (64, 96))
        assert np.asarray(image).std() > 0
        expected = {
            "prompt": "a red cube on a table",
            "seed": "1234",
            "steps": "2",
            "guidance": "6.5",
            "width": "64",
            "height": "96",
            "index": str(index),
            "model": "tiny",
        }
        assert {key: image.text[f"lcm-lite:{key}"] for key in expected} == expected


def test_the_same_seed_twice_gives_the_same_bytes_on_the_openai_and_the_ovms_paths(
    server: Server,
) -> None:
    def first_png(api: str) -> bytes:
        answer = client(server, api).images.generate(
            prompt="a lighthouse",
            size="64x64",
            extra_body={"rng_seed": 77, "num_inference_steps": 1},
        )
        return base64.b64decode(answer.data[0].b64_json)

    first = first_png("v1")
    assert first_png("v1") == first
    assert first_png("v3") == first


def test_no_size_is_the_models_own_size_and_openai_fields_that_do_not_apply_are_ignored(
    server: Server,
) -> None:
    answer = client(server).images.generate(
        prompt="a cat",
        quality="standard",
        style="vivid",
        user="someone",
        extra_body={"num_inference_steps": 1},
    )
    assert decoded(answer.data[0].b64_json).size == (256, 256)  # the tiny model's own size


def test_the_models_list_names_the_served_model(server: Server) -> None:
    assert [model.id for model in client(server).models.list()] == ["tiny"]


def test_a_wrong_api_key_is_refused_as_authentication_error(server: Server) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        client(server, api_key="not-the-token").models.list()
    assert "token" in refused.value.message


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"response_format": "url"}, "response_format: Input should be 'b64_json', got 'url'"),
        ({"size": "100x64"}, "size must be auto or WxH with each side from 64 to 1024"),
        ({"size": "big"}, "a multiple of 8, got 'big'"),
        ({"size": "\u0666\u0664x64"}, "size must be auto or WxH"),  # Arabic-Indic 64
        ({"n": 5}, "n: Input should be less than or equal to 4"),
        ({"extra_body": {"num_inference_steps": 9}}, "num_inference_steps: Input should be"),
        ({"extra_body": {"rng_seed": -1}}, "rng_seed: Input should be greater than or equal"),
        ({"n": 2, "extra_body": {"num_images_per_prompt": 3}}, "n and num_images_per_prompt"),
    ],
)
def test_bad_requests_are_bad_request_errors_that_say_what_is_wrong(
    server: Server, arguments: dict, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(server).images.generate(prompt="x", **arguments)
    assert message in refused.value.message
    assert refused.value.type == "invalid_request_error"


def a_picture(width: int = 80, height: int = 72) -> bytes:
    """A PNG of noise: a starting picture whose content varies."""
    picture = io.BytesIO()
    Image.effect_noise((width, height), 60).convert("RGB").save(picture, format="PNG")
    return picture.getvalue()


def test_images_edit_starts_from_the_picture_as_the_pipeline_does(
    server: Server, f32_pipe: LCMPipeline
) -> None:
    picture = a_picture()
    extra = {"rng_seed": 31, "num_inference_steps": 2, "strength": 0.5}
    answers = [
        client(server, api).images.edit(
            image=("start.png", picture, "image/png"), prompt="a blue cube", extra_body=extra
        )
        for api in ("v1", "v3")
    ]
    first, again = (decoded(answer.data[0].b64_json) for answer in answers)
    assert (first.size, first.text["lcm-lite:strength"]) == ((80, 72), "0.5")
    assert np.array_equal(np.asarray(first), np.asarray(again))
    alone = f32_pipe("a blue cube", image=picture, strength=0.5, steps=2, seed=31)[0]
    assert np.array_equal(np.asarray(first), np.asarray(alone))


def test_images_edit_takes_size_and_n(server: Server) -> None:
    answer = client(server).images.edit(
        image=("start.png", a_picture(), "image/png"),
        prompt="a blue cube",
        size="64x64",
        n=2,
        extra_body={"num_inference_steps": 1},
    )
    assert [decoded(item.b64_json).size for item in answer.data] == [(64, 64)] * 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"image": ("x.png", b"not a picture", "image/png")}, "not a PNG, JPEG or WebP"),
        ({"mask": ("m.png", b"not a picture", "image/png")}, "not a PNG, JPEG or WebP"),
        ({"mask": ("m.png", a_picture(80, 80), "image/png")}, "give a mask of the picture's"),
        ({"extra_body": {"strength": 0}}, "strength: Input should be greater than 0"),
        ({"size": "2048x64"}, "size must be auto or WxH"),
        ({"image": ("s.png", a_picture(8, 8), "image/png")}, "8x8 image, smaller than 64 pixels"),
        ({"image": ("s.png", a_picture(64, 8), "image/png")}, "64x8 image, smaller than 64"),
    ],
)
def test_bad_edits_are_bad_request_errors(server: Server, arguments: dict, message: str) -> None:
    call = {"image": ("start.png", a_picture(), "image/png"), "prompt": "x", **arguments}
    with pytest.raises(openai.BadRequestError) as refused:
        client(server).images.edit(**call)
    assert message in refused.value.message


def test_a_small_picture_with_a_size_given_is_edited_at_that_size(server: Server) -> None:
    answer = client(server).images.edit(
        image=("start.png", a_picture(8, 8), "image/png"),
        prompt="x",
        size="64x64",
        extra_body={"num_inference_steps": 1},
    )
    assert decoded(answer.data[0].b64_json).size == (64, 64)


def test_stream_is_taken_as_a_form_field(server: Server) -> None:
    answer = client(server).images.edit(
        image=("start.png", a_picture(), "image/png"),
        prompt="x",
        size="64x64",
        stream=False,
        extra_body={"num_inference_steps": 1},
    )
    assert len(answer.data) == 1
    for value, answered in (("false", "application/json"), ("true", "text/event-stream")):
        # as a raw form, to be sure it is sent: true streams (no previews: no tiny VAE needed)
        boundary = "lcm-lite-test-boundary"
        fields = {"prompt": "x", "size": "64x64", "num_inference_steps": "1", "stream": value}
        body = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{field}\r\n".encode()
            for name, field in fields.items()
        )
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"'
            "\r\nContent-Type: image/png\r\n\r\n".encode()
            + a_picture()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            f"{server.url}v1/images/edits",
            data=body,
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Authorization": f"Bearer {TOKEN}",
            },
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"].split(";")[0] == answered
            reply.read()


def test_a_negative_prompt_on_a_latent_consistency_model_is_a_bad_request(server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(server).images.generate(
            prompt="x", size="64x64", extra_body={"negative_prompt": "blurry"}
        )
    assert "takes no negative prompt" in refused.value.message


def test_a_negative_prompt_guides_an_lcm_lora_model_as_the_pipeline_does(
    sd_lcm_lora_pipe: LCMPipeline,
) -> None:
    with Server(sd_lcm_lora_pipe, port=0, model="sd-lcm-lora") as served:
        answer = client(served, api_key="unused").images.generate(
            prompt="a red cube",
            size="64x64",
            extra_body={
                "negative_prompt": "blurry",
                "guidance_scale": 2.0,
                "rng_seed": 12,
                "num_inference_steps": 2,
            },
        )
    image = decoded(answer.data[0].b64_json)
    assert image.text["lcm-lite:negative_prompt"] == "blurry"
    alone = sd_lcm_lora_pipe(
        "a red cube",
        negative_prompt="blurry",
        guidance_scale=2.0,
        seed=12,
        steps=2,
        width=64,
        height=64,
    )[0]
    without = sd_lcm_lora_pipe(
        "a red cube", guidance_scale=2.0, seed=12, steps=2, width=64, height=64
    )[0]
    assert np.array_equal(np.asarray(image), np.asarray(alone))
    assert not np.array_equal(np.asarray(image), np.asarray(without))


def test_vae_tiny_decodes_with_the_tiny_vae_as_the_pipeline_does(
    previews_pipe: LCMPipeline,
) -> None:
    with Server(previews_pipe, port=0, model="tiny") as served:
        answer = client(served, "v3", api_key="unused").images.generate(
            prompt="a red cube",
            size="64x64",
            extra_body={"vae": "tiny", "rng_seed": 5, "num_inference_steps": 1},
        )
        edited = client(served, api_key="unused").images.edit(
            image=("start.png", a_picture(), "image/png"),
            prompt="a red cube",
            extra_body={"vae": "tiny", "rng_seed": 5, "num_inference_steps": 1},
        )
    image = decoded(answer.data[0].b64_json)
    assert image.text["lcm-lite:vae"] == "tiny"
    alone = previews_pipe("a red cube", vae="tiny", seed=5, steps=1, width=64, height=64)[0]
    assert np.array_equal(np.asarray(image), np.asarray(alone))
    assert decoded(edited.data[0].b64_json).text["lcm-lite:vae"] == "tiny"


@pytest.mark.parametrize("api", ["v1", "v3"])
def test_vae_tiny_without_a_tiny_vae_is_a_bad_request(server: Server, api: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(server, api).images.generate(prompt="x", size="64x64", extra_body={"vae": "tiny"})
    assert "--tiny-vae" in refused.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        client(server, api).images.edit(
            image=("start.png", a_picture(), "image/png"), prompt="x", extra_body={"vae": "tiny"}
        )
    assert "--tiny-vae" in refused.value.message


def test_an_unknown_vae_is_a_bad_request(server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(server).images.generate(prompt="x", size="64x64", extra_body={"vae": "huge"})
    assert "vae: Input should be 'full' or 'tiny'" in refused.value.message


def pipeline_previews(pipe: LCMPipeline, **fields: object) -> dict[int, np.ndarray]:
    """Each step's tiny-VAE preview of the first image, as the pipeline makes it."""
    previews = {}

    def keep(info) -> None:
        previews[info.step] = np.asarray(info.preview()[0])

    pipe("a red cube", callback=keep, **fields)
    return previews


@pytest.fixture(scope="module")
def previewing(previews_pipe: LCMPipeline) -> Iterator[Server]:
    with Server(previews_pipe, port=0, token=TOKEN, model="tiny") as server:
        yield server


def test_a_streamed_generation_sends_step_previews_then_the_image(
    previewing: Server, previews_pipe: LCMPipeline
) -> None:
    stream = client(previewing).images.generate(
        prompt="a red cube",
        size="64x96",
        stream=True,
        partial_images=2,
        extra_body={"rng_seed": 5, "num_inference_steps": 4},
    )
    events = list(stream)
    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    assert {(event.size, event.output_format) for event in events} == {("64x96", "png")}
    # the previews of steps 2 and 3 of 4 (spread over the steps before the last), as the
    # pipeline's own step callback decodes them
    steps = pipeline_previews(previews_pipe, seed=5, steps=4, width=64, height=96)
    for event, step in zip(events[:2], (2, 3), strict=True):
        assert np.array_equal(np.asarray(decoded(event.b64_json).convert("RGB")), steps[step])
    assert not np.array_equal(steps[2], steps[3])
    final = decoded(events[2].b64_json)
    alone = previews_pipe("a red cube", seed=5, steps=4, width=64, height=96)[0]
    assert np.array_equal(np.asarray(final), np.asarray(alone))
    assert final.text["lcm-lite:seed"] == "5"


def test_a_streamed_edit_sends_image_edit_events(previewing: Server) -> None:
    events = list(
        client(previewing).images.edit(
            image=("start.png", a_picture(), "image/png"),
            prompt="a watercolour",
            n=2,
            stream=True,
            partial_images=1,
            extra_body={"num_inference_steps": 2, "strength": 1.0},
        )
    )
    assert [event.type for event in events] == [
        "image_edit.partial_image",
        "image_edit.completed",
        "image_edit.completed",
    ]
    assert decoded(events[0].b64_json).size == decoded(events[1].b64_json).size


def test_streaming_without_previews_needs_no_tiny_vae_and_partial_images_do(
    server: Server,
) -> None:
    events = list(
        client(server).images.generate(
            prompt="x", size="64x64", stream=True, extra_body={"num_inference_steps": 1}
        )
    )
    assert [event.type for event in events] == ["image_generation.completed"]
    with pytest.raises(openai.BadRequestError) as refused:
        client(server).images.generate(prompt="x", size="64x64", stream=True, partial_images=2)
    assert "partial_images needs a tiny VAE" in refused.value.message
    assert "--tiny-vae" in refused.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        client(server).images.generate(prompt="x", stream=True, partial_images=4)
    assert "partial_images: Input should be less than or equal to 3" in refused.value.message


@pytest.mark.slow
def test_a_client_that_closes_the_stream_cancels_its_job(previewing: Server) -> None:
    cancelled_before = previewing.jobs.outcomes["cancelled"]
    stream = client(previewing).images.generate(
        prompt="a red cube",
        size="512x512",
        n=4,
        stream=True,
        partial_images=3,
        extra_body={"num_inference_steps": 8},
    )
    first = next(iter(stream))
    assert first.type == "image_generation.partial_image"
    stream.close()
    while previewing.jobs.running is not None:  # the worker counts the job, then lets it go
        time.sleep(0.01)
    assert previewing.jobs.outcomes["cancelled"] == cancelled_before + 1
