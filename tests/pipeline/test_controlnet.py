"""ControlNet in the pipeline, beyond parity (tests/parity/test_controlnet_parity.py): the UNet is
unchanged without one, bad input is one line before anything runs, the control pictures used are
given back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lcm_lite import LCMPipeline
from lcm_lite.errors import ModelError, UsageError
from lcm_lite.models.unet_residuals import is_residual_input

pytest.importorskip("diffusers")


def _picture(seed: int = 0, size: tuple[int, int] = (64, 64)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_without_a_controlnet_the_unet_takes_only_its_own_inputs(f32_pipe, controlnet_pipe):
    f32_pipe("a cat", steps=1, width=64, height=64, seed=1)
    controlnet_pipe("a cat", steps=1, width=64, height=64, seed=1, control_image=_picture())

    plain = f32_pipe._networks.unet().compiled.inputs
    networks = controlnet_pipe._networks
    steered = networks.unet(networks.controlnets()).compiled.inputs
    assert not any(is_residual_input(port) for port in plain)
    assert len(plain) == 4
    assert sum(is_residual_input(port) for port in steered) == 5  # 4 skips + the mid block


def test_the_control_pictures_used_come_back_made_by_the_preprocessor(controlnet_pipe):
    result = controlnet_pipe(
        "a cat",
        steps=1,
        seed=1,
        control_image=_picture(size=(72, 56)),
        control_preprocess="canny",
        canny_thresholds=[50, 100],
    )

    assert result[0].size == (72, 56)  # the control picture's size
    edges = np.asarray(result.control_images[0])
    assert set(np.unique(edges)) == {0, 255}
    assert result.metadata(0, "m")["control_preprocess"] == "canny"


def test_a_controlnet_runs_without_keeping_models(tiny_ov_dir, tiny_controlnet, controlnet_pipe):
    pipe = LCMPipeline.from_pretrained(
        tiny_ov_dir, precision="f32", controlnet=tiny_controlnet[1], keep_models=False
    )
    arguments = {"steps": 2, "seed": 4, "width": 64, "height": 64, "control_image": _picture(2)}

    once = np.asarray(pipe("a dog", **arguments)[0])

    assert np.array_equal(once, np.asarray(controlnet_pipe("a dog", **arguments)[0]))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"control_image": [_picture(), _picture(1), _picture(2)]}, "3 control pictures for 1"),
        ({"controlnet_conditioning_scale": [0.5, 0.5]}, "2 conditioning scales for 1"),
        ({"controlnet_conditioning_scale": 7.0}, r"must be a number in \[0, 5\]"),
        ({"control_guidance_start": 0.6, "control_guidance_end": 0.5}, "must be below"),
        ({"control_image": b"not a picture"}, "not a PNG, JPEG or WebP picture"),
        ({"control_preprocess": "edges"}, "control_preprocess must be"),
    ],
)
def test_bad_control_input_is_one_line_before_anything_runs(controlnet_pipe, arguments, message):
    with pytest.raises(UsageError, match=message):
        controlnet_pipe.plan(controlnet_pipe_request(**{"control_image": _picture(), **arguments}))


def controlnet_pipe_request(**fields):
    from lcm_lite.request import Request

    return Request("a cat", steps=1, **fields)


def test_a_control_picture_without_a_controlnet_is_refused(f32_pipe):
    with pytest.raises(UsageError, match="control_image needs a ControlNet"):
        f32_pipe("a cat", steps=1, control_image=_picture())


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("block_out_channels", [320, 640, 1280, 1280]),  # an SD 1.5 ControlNet's
        ("in_channels", 9),  # made from an inpainting UNet: a ControlNet takes the latents alone
    ],
)
def test_a_controlnet_for_another_base_model_is_refused_at_load(
    tiny_ov_dir, tiny_controlnet, tmp_path, key, value
):
    other = tmp_path / "other"
    shutil.copytree(tiny_controlnet[1], other)
    config_path = other / "controlnet" / "config.json"
    config = json.loads(config_path.read_text())
    config[key] = value
    config_path.write_text(json.dumps(config))

    with pytest.raises(UsageError, match="ControlNet .* is for another base model"):
        LCMPipeline.from_pretrained(tiny_ov_dir, controlnet=other)


def test_a_folder_that_is_not_a_converted_controlnet_is_a_model_error(tiny_ov_dir):
    with pytest.raises(ModelError, match="not a ControlNetModel"):
        LCMPipeline.from_pretrained(tiny_ov_dir, controlnet=Path(tiny_ov_dir) / "unet")


def test_a_request_without_a_control_picture_runs_the_plain_unet(f32_pipe, controlnet_pipe):
    """A pipeline loaded with ControlNets gives, for a request without a control picture, the
    image of the pipeline without them, from the UNet as it is (no residual inputs, no
    ControlNet compiled for it)."""
    fields = {"steps": 2, "width": 64, "height": 64, "seed": 3}
    controlnet_pipe("a cat", **fields, control_image=_picture())  # the steered UNet held first
    plain = f32_pipe("a cat", **fields)
    unsteered = controlnet_pipe("a cat", **fields)

    assert np.array_equal(np.asarray(unsteered[0]), np.asarray(plain[0]))
    assert not any(is_residual_input(p) for p in controlnet_pipe._networks.unet().compiled.inputs)
