"""A LoRA blend per request on both APIs of a live ``lcm-lite serve`` (``lora_weights``), with
the adapters' weights an input of the compiled networks: no compile between requests."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_a1111_api import settled_outcomes
from test_server import SMALL, call, png

from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
from lcm_lite.server.running import Server

openai = pytest.importorskip("openai")
pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def blending(tiny_ov_dir: Path, kohya_lora: Path, peft_lora: Path) -> Iterator[Server]:
    pipe = LCMPipeline.from_pretrained(
        tiny_ov_dir,
        precision="f32",
        loras=[(kohya_lora, 1.0), (peft_lora, 1.0)],
        lora_mode="runtime",
    )
    with Server(pipe, port=0, capacity=2, model="tiny") as server:
        yield server


def _own_api(server: Server, **fields: object) -> Image.Image:
    body = {"prompt": "a red cube", "seed": 3, **SMALL, **fields}
    reply = call(server.url, "POST", "/api/generate", body)
    assert reply.status == 200, reply.body
    return png(base64.b64decode(reply.json()["images"][0]["png_base64"]))


def test_each_request_blends_the_loaded_loras_at_its_weights_on_both_apis(
    blending: Server,
) -> None:
    pipe = blending.jobs._pipe
    direct = pipe("a red cube", seed=3, lora_weights=[0.5, 0.0], **SMALL)
    compiled = pipe._networks
    own = _own_api(blending, lora_weights=[0.5, 0.0])
    assert own.text["lcm-lite:lora_weights"] == "0.5,0.0"
    answer = openai.OpenAI(base_url=f"{blending.url}v1", api_key="x", max_retries=0)
    generated = answer.images.generate(
        prompt="a red cube",
        size="64x64",
        extra_body={"rng_seed": 3, "num_inference_steps": 1, "lora_weights": [0.5, 0.0]},
    )
    theirs = png(base64.b64decode(generated.data[0].b64_json))
    assert np.array_equal(np.asarray(own), np.asarray(direct[0]))
    assert np.array_equal(np.asarray(theirs), np.asarray(direct[0]))
    other = _own_api(blending, lora_weights=[0.0, 1.0])
    assert np.abs(np.asarray(other).astype(int) - np.asarray(own)).mean() > 1
    default = _own_api(blending)
    assert default.text["lcm-lite:lora_weights"] == "1.0,1.0"
    assert pipe._networks is compiled  # no compile for any of these blends


@pytest.mark.parametrize("path", ["/api/generate", "/api/jobs", "/v1/images/generations"])
def test_lora_weights_of_the_wrong_count_are_refused_with_400_in_one_line(
    blending: Server, path: str
) -> None:
    done_before = settled_outcomes(blending)  # the job before is counted once its answer is out
    body = {"prompt": "x", "lora_weights": [0.5]}
    body.update(SMALL if path.startswith("/api") else {"size": "64x64"})
    reply = call(blending.url, "POST", path, body)
    assert reply.status == 400
    error = reply.json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert "lora_weights needs 2 weight(s)" in message and "\n" not in message
    assert blending.jobs.outcomes == done_before


def test_a1111_lora_tags_in_the_prompt_set_the_weights_of_the_loaded_loras(
    blending: Server,
) -> None:
    listed = call(blending.url, "GET", "/sdapi/v1/loras").json()
    assert [lora["name"] for lora in listed] == ["kohya", "peft"]
    body = {"prompt": "a red cube <lora:kohya:0.5> <lora:absent:1>", "seed": 3, "steps": 1}
    reply = call(blending.url, "POST", "/sdapi/v1/txt2img", {**body, **SMALL})
    assert reply.status == 200, reply.body
    answer = reply.json()
    tagged = png(base64.b64decode(answer["images"][0]))
    info = json.loads(answer["info"])
    assert "<lora:absent> ignored: no LoRA of that name is loaded" in info["notes"]
    assert tagged.text["lcm-lite:lora_weights"] == "0.5,1.0"  # peft keeps its load weight
    pipe = blending.jobs._pipe
    expected = pipe("a red cube  ", seed=3, lora_weights=[0.5, 1.0], prompt_weighting=True, **SMALL)
    assert np.array_equal(np.asarray(tagged), np.asarray(expected[0]))
    untagged = pipe("a red cube  ", seed=3, prompt_weighting=True, **SMALL)
    assert np.abs(np.asarray(untagged[0]).astype(int) - np.asarray(tagged)).mean() > 1
    bad = call(blending.url, "POST", "/sdapi/v1/txt2img", {"prompt": "<lora:kohya:x>"})
    assert bad.status == 400 and "the weight is not a number" in bad.json()["detail"]
