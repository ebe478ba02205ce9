"""The AUTOMATIC1111 API (``/sdapi/v1``) of a live ``lcm-lite serve`` on the tiny model, called
over HTTP with the bodies and headers that real clients send (taken from their public source,
named at each)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
from lcm_lite.server.running import Server

requests = pytest.importorskip("requests")
TOKEN = "an-a1111-api-token-of-length"

# SillyTavern, public/scripts/extensions/stable-diffusion/index.js (commit 008ac9d4),
# generateAutoImage: the body its server (src/endpoints/stable-diffusion.js, /generate) forwards
# to /sdapi/v1/txt2img as it is, `url` and `auth` included; the settings are its defaults
# (defaultSettings) but a 64x64 size, to stay cheap.
SILLYTAVERN_TXT2IMG = {
    "url": "http://localhost:7860",
    "auth": "",
    "prompt": "best quality, absurdres, aesthetic, a red fox in the snow",
    "negative_prompt": "lowres, bad anatomy, bad hands, text, error, cropped, worst quality, "
    "low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry",
    "sampler_name": "DDIM",
    "steps": 20,
    "cfg_scale": 7,
    "width": 64,
    "height": 64,
    "restore_faces": False,
    "enable_hr": False,
    "hr_upscaler": "Latent",
    "hr_scale": 2.0,
    "denoising_strength": 0.7,
    "hr_second_pass_steps": 0,
    "save_images": True,
    "send_images": True,
    "do_not_save_grid": False,
    "do_not_save_samples": False,
}


def open_webui_txt2img(prompt: str, n: int, size: str, steps: int) -> dict:
    """Open WebUI, backend/open_webui/routers/images.py (commit 02530d50), image_generations
    with the AUTOMATIC1111 engine: ``batch_size`` is its ``n``, the size split in two."""
    width, height = map(int, size.split("x"))
    return {"prompt": prompt, "batch_size": n, "width": width, "height": height, "steps": steps}


@pytest.fixture(scope="module")
def server(f32_pipe: LCMPipeline) -> Iterator[Server]:
    with Server(f32_pipe, port=0, capacity=2, model="tiny") as server:
        yield server


@pytest.fixture(scope="module")
def guarded(f32_pipe: LCMPipeline) -> Iterator[Server]:
    with Server(f32_pipe, port=0, token=TOKEN, capacity=2, model="tiny") as server:
        yield server


def sdapi(server: Server, method: str, path: str, body: object = None, **kwargs):
    return requests.request(
        method, f"{server.url}sdapi/v1/{path}", json=body, timeout=120, **kwargs
    )


def png(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def settled_outcomes(server: Server) -> dict[str, int]:
    """The jobs' outcomes once the worker is idle: it counts a job after its answer is out."""
    while server.jobs.running is not None or server.jobs.waiting:
        time.sleep(0.01)
    return server.jobs.outcomes.copy()


def own_api_pixels(server: Server, **fields: object) -> np.ndarray:
    reply = requests.post(f"{server.url}api/generate", json=fields, timeout=120).json()
    return np.asarray(png(reply["images"][0]["png_base64"]))


def test_sillytaverns_body_gives_a1111s_answer_with_the_seed_and_what_was_changed(
    server: Server,
) -> None:
    reply = sdapi(server, "POST", "txt2img", SILLYTAVERN_TXT2IMG)
    assert reply.status_code == 200
    answer = reply.json()
    assert set(answer) == {"images", "parameters", "info"}
    assert isinstance(answer["info"], str)  # A1111's info is JSON text
    info = json.loads(answer["info"])
    (image,) = [png(b64) for b64 in answer["images"]]
    assert (image.format, image.size) == ("PNG", (64, 64))
    assert info["all_seeds"] == [info["seed"]] and image.text["lcm-lite:seed"] == str(info["seed"])
    assert info["steps"] == 8 and image.text["lcm-lite:steps"] == "8"  # the most served
    assert info["cfg_scale"] == 7.0 and info["negative_prompt"] == ""
    assert info["notes"] == [
        "steps 20 taken as 8, the most served",
        "negative_prompt ignored: a latent consistency model takes none",
    ]
    assert answer["parameters"]["steps"] == 20 and answer["parameters"]["seed"] == -1
    # the same image as lcm-lite's own API makes with that seed
    same = own_api_pixels(
        server,
        prompt=SILLYTAVERN_TXT2IMG["prompt"],
        guidance=7,
        steps=8,
        width=64,
        height=64,
        seed=info["seed"],
        prompt_weighting=True,  # A1111 reads (word:1.2)
    )
    assert np.array_equal(np.asarray(image), same)


def test_open_webuis_batch_and_sillytaverns_n_iter_give_one_image_each_with_its_seed(
    server: Server,
) -> None:
    body = {**open_webui_txt2img("a lighthouse", 2, "64x64", 1), "seed": 40, "n_iter": 2}
    answer = sdapi(server, "POST", "txt2img", body).json()
    info = json.loads(answer["info"])
    assert len(answer["images"]) == 4
    assert (info["seed"], info["all_seeds"]) == (40, [40, 40, 42, 42])  # seed + batch * size
    second_batch = own_api_pixels(
        server,
        prompt="a lighthouse",
        num_images=2,
        steps=1,
        width=64,
        height=64,
        seed=42,
        prompt_weighting=True,
    )
    assert np.array_equal(np.asarray(png(answer["images"][2])), second_batch)


def test_weighted_prompts_and_clip_skip_are_read_as_a1111_does(server: Server) -> None:
    body = {
        "prompt": "a (red:1.5) cube, [blurry]",
        "steps": 2,
        "width": 64,
        "height": 64,
        "seed": 9,
        "override_settings": {"CLIP_stop_at_last_layers": 2, "sd_vae": "Automatic"},
    }
    answer = sdapi(server, "POST", "txt2img", body).json()
    image = png(answer["images"][0])
    assert json.loads(answer["info"])["clip_skip"] == 2
    assert (image.text["lcm-lite:clip_skip"], image.text["lcm-lite:prompt_weighting"]) == (
        "1",
        "True",
    )
    fields = {"prompt": body["prompt"], "steps": 2, "width": 64, "height": 64, "seed": 9}
    same = own_api_pixels(server, **fields, prompt_weighting=True, clip_skip=1)
    assert np.array_equal(np.asarray(image), same)
    # and both change the image: the test would pass without them otherwise
    assert not np.array_equal(same, own_api_pixels(server, **fields, prompt_weighting=True))
    assert not np.array_equal(same, own_api_pixels(server, **fields, clip_skip=1))


def test_open_webuis_model_check_reads_the_options_and_writes_them_back(server: Server) -> None:
    # Open WebUI's set_image_model: GET options, and POST them back with its model chosen
    # from sd-models' titles (its get_models)
    (model,) = sdapi(server, "GET", "sd-models").json()
    assert model["title"] == model["model_name"] == "tiny"
    options = sdapi(server, "GET", "options").json()
    assert options["sd_model_checkpoint"] == "tiny"
    assert sdapi(server, "POST", "options", {**options, "sd_model_checkpoint": "tiny"}).ok
    refused = sdapi(server, "POST", "options", {"sd_model_checkpoint": "sdxl.safetensors"})
    assert refused.status_code == 400
    assert refused.json()["detail"] == "sd_model_checkpoint: lcm-lite serves one model, tiny"


def test_the_lists_sillytavern_reads_name_what_there_is(server: Server) -> None:
    # src/endpoints/stable-diffusion.js: /samplers, /schedulers, /upscalers and
    # /latent-upscale-modes (mapped to their names), /sd-vae (an array)
    names = {
        path: [item["name"] for item in sdapi(server, "GET", path).json()]
        for path in ("samplers", "schedulers", "upscalers", "latent-upscale-modes")
    }
    assert names == {
        "samplers": ["LCM"],
        "schedulers": ["automatic"],
        "upscalers": ["None"],
        "latent-upscale-modes": [],
    }
    assert sdapi(server, "GET", "sd-vae").json() == []


def test_progress_when_idle_is_what_sillytavern_waits_for(server: Server) -> None:
    # its /set-model waits until progress is 0.0 and state.job_count is 0
    progress = sdapi(server, "GET", "progress").json()
    assert (progress["progress"], progress["state"]["job_count"]) == (0.0, 0)
    assert progress["current_image"] is None


def test_img2img_starts_from_init_images_with_denoising_strength(server: Server) -> None:
    picture = io.BytesIO()
    Image.effect_noise((72, 64), 60).convert("RGB").save(picture, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(picture.getvalue()).decode()
    body = {
        "init_images": [data_url],
        "prompt": "a watercolour",
        "denoising_strength": 0.5,
        "seed": 3,
        "steps": 2,
        "mask": None,  # as clients send it without inpainting
        "resize_mode": 0,
        "inpainting_fill": 0,
        "include_init_images": False,
    }
    answer = sdapi(server, "POST", "img2img", body).json()
    info = json.loads(answer["info"])
    image = png(answer["images"][0])
    assert image.size == (72, 64)  # the picture's own size
    assert (info["denoising_strength"], image.text["lcm-lite:strength"]) == (0.5, "0.5")
    assert "init_images" not in answer["parameters"]


def test_img2img_with_a_mask_inpaints_as_the_pipeline_does(
    server: Server, f32_pipe: LCMPipeline
) -> None:
    picture, mask = io.BytesIO(), io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(picture, format="PNG")
    white_right = Image.new("L", (64, 64))
    white_right.paste(255, (32, 0, 64, 64))
    white_right.save(mask, format="PNG")
    encoded = {
        name: base64.b64encode(data.getvalue()).decode()
        for name, data in (("picture", picture), ("mask", mask))
    }
    body = {
        "init_images": [encoded["picture"]],
        "mask": encoded["mask"],
        "mask_blur": 4,
        "inpainting_fill": 1,  # A1111's "original": ignored, as diffusers starts from the picture
        "inpaint_full_res": False,
        "prompt": "a red cube",
        "denoising_strength": 1.0,
        "steps": 2,
        "seed": 5,
    }
    answer = sdapi(server, "POST", "img2img", body).json()
    image = np.asarray(png(answer["images"][0]))
    fields = {"strength": 1.0, "steps": 2, "seed": 5, "prompt_weighting": True}
    inpainted = f32_pipe(
        "a red cube", image=picture.getvalue(), mask_image=mask.getvalue(), mask_blur=4, **fields
    )[0]
    assert np.array_equal(image, np.asarray(inpainted))
    whole = f32_pipe("a red cube", image=picture.getvalue(), **fields)[0]
    assert not np.array_equal(image, np.asarray(whole))  # the mask made a difference


def test_the_gimp_plugins_img2img_body_is_answered_with_the_steps_it_could_take(
    server: Server,
) -> None:
    # ArtBIT/stable-gimpfusion, stable_gimpfusion.py (commit 0610221a), imageToImage: the layer
    # resized to fit between 384 and 1024 (multiples of 64), the plug-in's default settings
    picture = io.BytesIO()
    Image.effect_noise((384, 384), 60).convert("RGB").save(picture, format="PNG")
    body = {
        "resize_mode": 0,
        "init_images": [base64.b64encode(picture.getvalue()).decode()],
        "prompt": "a watercolour",
        "negative_prompt": "",
        "denoising_strength": 0.8,
        "steps": 50,
        "cfg_scale": 7.5,
        "width": 384,
        "height": 384,
        "sampler_index": "Euler a",
        "batch_size": 1,
        "seed": -1,
    }
    reply = sdapi(server, "POST", "img2img", body, headers={"Accept": "application/json"})
    info = json.loads(reply.json()["info"])
    assert png(reply.json()["images"][0]).size == (384, 384)
    assert info["notes"] == ["steps 50 taken as 8, the most served"]  # "" is no negative prompt
    assert (info["denoising_strength"], info["cfg_scale"]) == (0.8, 7.5)


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("txt2img", {"prompt": "x", "cfg_scale": 50}, "cfg_scale: Input should be less than"),
        ("txt2img", {"prompt": "x", "width": 100}, "width: Input should be a multiple of 8"),
        ("txt2img", {"prompt": "x", "seed": -2}, "seed"),
        ("txt2img", {"prompt": "x", "batch_size": 5}, "batch_size: Input should be less than"),
        ("img2img", {"prompt": "x"}, "init_images: Field required"),
        ("img2img", {"init_images": ["not base64!"]}, "image must be a picture in base64"),
        ("img2img", {"init_images": ["aGk="], "mask": "not base64!"}, "image must be a picture"),
        (
            "img2img",
            {"init_images": ["aGk="], "mask": "aGk=", "inpainting_mask_invert": 1},
            "inpainting_mask_invert: 1 is not supported",
        ),
    ],
)
def test_bad_requests_are_400_in_a1111s_error_shape(
    server: Server, path: str, body: dict, detail: str
) -> None:
    done_before = settled_outcomes(server)
    reply = sdapi(server, "POST", path, body)
    assert reply.status_code == 400
    error = reply.json()
    assert set(error) == {"error", "detail", "body", "errors"}
    assert error["error"] == "HTTPException" and detail in error["detail"]
    assert error["errors"] == error["detail"] and "\n" not in error["detail"]
    assert server.jobs.outcomes == done_before


def test_a_body_that_is_not_json_is_refused_in_a1111s_error_shape(server: Server) -> None:
    reply = requests.post(
        f"{server.url}sdapi/v1/txt2img",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert reply.status_code == 400 and "not valid JSON" in reply.json()["detail"]


def test_the_token_is_required_as_on_the_other_apis(guarded: Server) -> None:
    refused = sdapi(guarded, "GET", "sd-models")
    assert refused.status_code == 401 and "token" in refused.json()["detail"]
    # Open WebUI's and SillyTavern's own "API auth" is HTTP Basic: refused too
    basic = sdapi(guarded, "GET", "options", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert sdapi(guarded, "GET", "sd-models", headers=bearer).json()[0]["title"] == "tiny"


@pytest.fixture(scope="module")
def previewing(previews_pipe: LCMPipeline) -> Iterator[Server]:
    with Server(previews_pipe, port=0, capacity=2, model="tiny") as server:
        yield server


@pytest.mark.slow
def test_progress_shows_the_live_preview_and_interrupt_stops_the_job(previewing: Server) -> None:
    body = {"prompt": "a lighthouse", "steps": 8, "width": 512, "height": 512, "batch_size": 4}
    answers = []
    running = threading.Thread(
        target=lambda: answers.append(sdapi(previewing, "POST", "txt2img", body))
    )
    running.start()
    progress = sdapi(previewing, "GET", "progress").json()
    while progress["current_image"] is None:  # until a step's preview is there
        assert running.is_alive(), answers[0].text
        progress = sdapi(previewing, "GET", "progress").json()
    assert 0 < progress["progress"] <= 1 and progress["state"]["job_count"] == 1
    assert progress["state"]["sampling_steps"] == 8 and progress["state"]["sampling_step"] >= 1
    preview = png(progress["current_image"])
    assert preview.size == (512, 512) and np.asarray(preview).std() > 0
    skipped = sdapi(previewing, "GET", "progress", params={"skip_current_image": "true"}).json()
    assert skipped["current_image"] is None
    assert sdapi(previewing, "POST", "interrupt").json() == {}
    running.join()
    (answer,) = answers
    assert answer.status_code == 503 and "cancelled" in answer.json()["detail"]
