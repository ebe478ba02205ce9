"""``lcm-lite-convert --quantize-unet``: an int8 UNet calibrated on the built-in prompts."""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest

pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def quantized_dir(tiny_diffusers_dir, tmp_path_factory):
    from conversion.export import convert

    out_dir = tmp_path_factory.mktemp("quantized") / "openvino"
    return convert(
        tiny_diffusers_dir, out_dir, weights="fp32", quantize_unet=True, calibration_size=64
    )


def _op_types(xml):
    return {op.get_type_name() for op in ov.Core().read_model(xml).get_ops()}


def test_the_unet_is_quantized_and_the_other_networks_are_not(quantized_dir):
    assert "FakeQuantize" in _op_types(quantized_dir / "unet" / "openvino_model.xml")
    assert "FakeQuantize" not in _op_types(quantized_dir / "text_encoder" / "openvino_model.xml")
    assert "FakeQuantize" not in _op_types(quantized_dir / "vae_decoder" / "openvino_model.xml")


def test_a_quantized_model_generates_nearer_the_float_image_than_another_seed(
    quantized_dir, f32_pipe
):
    from lcm_lite import LCMPipeline

    def image(pipe, seed):
        return np.asarray(pipe("a red cube", steps=4, width=64, height=64, seed=seed)[0], float)

    quantized = image(LCMPipeline.from_pretrained(quantized_dir, precision="f32"), 1)
    reference, other_seed = image(f32_pipe, 1), image(f32_pipe, 2)
    moved = np.abs(quantized - reference).mean()
    assert 0 < moved < np.abs(other_seed - reference).mean()
