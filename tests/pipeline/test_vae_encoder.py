"""The VAE encoder wrapper: a posterior sampled as diffusers samples it, or latents used as given.

Two small OpenVINO encoders built here, one strided convolution each: one outputs
``latent_parameters`` (mean and log-variance, as AutoencoderKL's encoder), the other 4-channel
latents directly (as a tiny VAE's encoder does).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
from openvino import opset13 as ops

from lcm_lite.errors import ModelError
from lcm_lite.models.configs import VAEConfig
from lcm_lite.models.networks import VAEEncoder
from lcm_lite.runtime.compiler import Compiler
from lcm_lite.sampling.torch_rng import TorchGenerator

LATENT_SHAPE = (2, 4, 3, 5)  # two pictures of 40x24 pixels


def _encoder(tmp_path, channels: int, config: dict) -> tuple[Path, VAEEncoder]:
    """A ``vae_encoder`` IR that is an 8x8 stride-8 convolution to ``channels``, and the wrapper
    compiled on it with the f32 hint."""
    sample = ops.parameter([-1, 3, -1, -1], ov.Type.f32, name="sample")
    weights = np.random.default_rng(channels).standard_normal((channels, 3, 8, 8)) / 20
    output = ops.convolution(
        sample, ops.constant(weights.astype(np.float32)), [8, 8], [0, 0], [0, 0], [1, 1]
    )
    model = ov.Model([output], [sample], "vae_encoder")
    folder = tmp_path / "vae_encoder"
    folder.mkdir()
    ov.save_model(model, folder / "openvino_model.xml", compress_to_fp16=False)
    (folder / "config.json").write_text(json.dumps(config))
    xml = folder / "openvino_model.xml"
    vae_config = VAEConfig.read(folder / "config.json")
    return xml, VAEEncoder(Compiler(precision="f32"), xml, vae_config, LATENT_SHAPE, "VAE encoder")


def _pixels() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (2, 3, 24, 40)).astype(np.float32)


def _raw_output(xml: Path, pixels: np.ndarray) -> np.ndarray:
    compiled = ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled({0: pixels})[0]


@pytest.mark.parity
def test_latent_parameters_are_sampled_as_diffusers_posterior_with_the_same_generator(tmp_path):
    torch = pytest.importorskip("torch")
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    xml, encoder = _encoder(tmp_path, 8, {"scaling_factor": 0.18215})
    parameters = _raw_output(xml, _pixels())

    ours = encoder(_pixels(), TorchGenerator(42))
    posterior = DiagonalGaussianDistribution(torch.from_numpy(parameters))
    theirs = 0.18215 * posterior.sample(torch.Generator().manual_seed(42)).numpy()

    assert ours.shape == LATENT_SHAPE
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_an_encoder_that_outputs_latents_draws_nothing_and_applies_shift_and_scale(tmp_path):
    xml, encoder = _encoder(tmp_path, 4, {"scaling_factor": 1.5, "shift_factor": 0.25})
    generator = TorchGenerator(7)

    latents = encoder(_pixels(), generator)

    expected = (_raw_output(xml, _pixels()) - np.float32(0.25)) * np.float32(1.5)
    np.testing.assert_allclose(latents, expected, rtol=1e-6, atol=1e-6)
    untouched = TorchGenerator(7).randn(LATENT_SHAPE)
    assert np.array_equal(generator.randn(LATENT_SHAPE), untouched)


def test_an_encoder_with_other_channels_is_a_model_error(tmp_path):
    _, encoder = _encoder(tmp_path, 6, {"scaling_factor": 1.0})
    with pytest.raises(ModelError, match="outputs 6 channels; expected 8"):
        encoder(_pixels(), TorchGenerator(1))
