"""``lcm-lite-convert --quantize-unet``: an int8 UNet calibrated on the built-in prompts, with
what is exported (fused LoRAs, LCM sampling)."""

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


def test_calibration_samples_a_plain_sd_model_as_lcm_with_the_lora_fused(
    tiny_sd_diffusers_dir, tiny_sd_ov_dir, lcm_lora
):
    """diffusers' LCM-LoRA recipe: the LCM scheduler's timesteps, no guidance embedding (the
    exported UNet's inputs), and the fused LoRA moves the latents the UNet sees."""
    from diffusers import LCMScheduler

    from conversion.quantize import CALIBRATION_PROMPTS, collect_unet_inputs

    fused = collect_unet_inputs(tiny_sd_diffusers_dir, size=64, loras=[(lcm_lora, 1.0)])
    plain = collect_unet_inputs(tiny_sd_diffusers_dir, size=64)
    unet = ov.Core().read_model(tiny_sd_ov_dir / "unet" / "openvino_model.xml")
    assert len(fused) == 4 * len(CALIBRATION_PROMPTS)
    assert all(set(s) == {i.get_any_name() for i in unet.inputs} for s in fused)
    scheduler = LCMScheduler.from_pretrained(tiny_sd_diffusers_dir, subfolder="scheduler")
    scheduler.set_timesteps(4)
    assert [int(s["timestep"][0]) for s in fused[:4]] == scheduler.timesteps.tolist()
    assert np.array_equal(fused[0]["sample"], plain[0]["sample"])  # the same seeded noise
    assert np.abs(fused[1]["sample"] - plain[1]["sample"]).mean() > 1e-3


@pytest.mark.slow
def test_a_plain_sd_model_quantized_with_a_fused_lcm_lora_keeps_near_its_float_image(
    tiny_sd_diffusers_dir, tiny_sd_ov_dir, lcm_lora, tmp_path
):
    from conversion.export import convert
    from lcm_lite import LCMPipeline

    out_dir = convert(
        tiny_sd_diffusers_dir,
        tmp_path / "quantized",
        weights="fp32",
        quantize_unet=True,
        calibration_size=64,
        loras=[(lcm_lora, 1.0)],
    )
    assert "FakeQuantize" in _op_types(out_dir / "unet" / "openvino_model.xml")

    def image(pipe, seed):
        result = pipe("a red cube", steps=4, guidance_scale=1.0, width=64, height=64, seed=seed)
        return np.asarray(result[0], float)

    quantized = image(LCMPipeline.from_pretrained(out_dir, precision="f32"), 1)
    applied = LCMPipeline.from_pretrained(tiny_sd_ov_dir, precision="f32", loras=[(lcm_lora, 1.0)])
    reference, other_seed = image(applied, 1), image(applied, 2)
    assert 0 < np.abs(quantized - reference).mean() < np.abs(other_seed - reference).mean()


def test_quantizing_a_plain_sd_model_without_a_lora_is_a_one_line_usage_error(
    tiny_sd_diffusers_dir, tmp_path, capsys
):
    from conversion.__main__ import main

    out_dir = tmp_path / "out"
    assert main([str(tiny_sd_diffusers_dir), str(out_dir), "--quantize-unet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "plain Stable Diffusion model" in lines[0] and "--lora" in lines[0]
    assert not out_dir.exists()
