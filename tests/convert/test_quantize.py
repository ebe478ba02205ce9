"""``lcm-lite-convert --quantize-unet``: the exported folder's UNet quantized by ``lcm-lite
quantize``'s code (``lcm_lite.quantization``), calibrated on what is exported (fused LoRAs, LCM
sampling)."""

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
        tiny_diffusers_dir,
        out_dir,
        weights="int8",
        quantize_unet=True,
        calibration_size=64,
        calibration_samples=16,
    )


def _op_types(xml):
    return {op.get_type_name() for op in ov.Core().read_model(xml).get_ops()}


def test_the_unet_is_quantized_and_the_other_networks_are_not(quantized_dir):
    """With ``--weights int8`` the other networks' weights are compressed, the UNet quantized."""
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


def test_calibration_records_the_unet_inputs_of_lcm_lite_s_own_generations(tiny_ov_dir):
    """Each step of each prompt: the seeded noise first, the schedule's timesteps, the prompt's
    embeddings, keyed by the IR's input index."""
    from lcm_lite.models.networks import bind_unet_inputs
    from lcm_lite.quantization.calibration import record_unet_inputs
    from lcm_lite.sampling.torch_rng import TorchGenerator

    samples = record_unet_inputs(tiny_ov_dir, size=64, steps=2, samples=3)
    ports = bind_unet_inputs(ov.Core().read_model(tiny_ov_dir / "unet" / "openvino_model.xml"))
    assert len(samples) == 3
    assert all(set(s) == {0, 1, 2, 3} for s in samples)
    first_noise = TorchGenerator(0).randn(samples[0][ports.sample].shape)
    assert np.array_equal(samples[0][ports.sample], first_noise)
    timesteps = [int(s[ports.timestep][0]) for s in samples]
    assert timesteps[0] == timesteps[2] > timesteps[1]  # 2 steps, then the next prompt's first
    texts = [s[ports.encoder_hidden_states] for s in samples]
    assert np.array_equal(texts[0], texts[1]) and not np.array_equal(texts[0], texts[2])


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
        calibration_samples=16,
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
