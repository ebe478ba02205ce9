"""The model folder's JSON configs are read one way: each key its field's JSON type, or a one-line
ModelError naming the key (and the file)."""

from __future__ import annotations

import json

import pytest

from lcm_lite.errors import ModelError
from lcm_lite.json_config import from_json
from lcm_lite.models.configs import UNetConfig, VAEConfig
from lcm_lite.models.folder import component_files


def test_a_unet_config_takes_the_keys_it_declares_and_ignores_the_others():
    sd15 = {"in_channels": 4, "sample_size": 96, "layers_per_block": 2, "act_fn": "silu"}
    assert from_json(UNetConfig, {**sd15, "time_cond_proj_dim": 256}) == UNetConfig(
        sample_size=96, time_cond_proj_dim=256
    )
    assert from_json(UNetConfig, {**sd15, "time_cond_proj_dim": None}).time_cond_proj_dim is None
    assert from_json(UNetConfig, {}) == UNetConfig(4, 64, 2, None)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"in_channels": 4.0}, "in_channels must be an integer, got 4.0"),
        ({"layers_per_block": True}, "layers_per_block must be an integer"),
        ({"sample_size": [64, 64]}, r"sample_size must be an integer, got \[64, 64\]"),
        ({"time_cond_proj_dim": "256"}, "time_cond_proj_dim must be null or an integer"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_named(content, message):
    with pytest.raises(ModelError, match=message):
        from_json(UNetConfig, content)


def _vae(tmp_path, content):
    path = component_files(tmp_path, "vae_decoder").config
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(content))
    return VAEConfig.read(path)


def test_a_vae_config_defaults_per_class_as_diffusers(tmp_path):
    kl = _vae(tmp_path, {"block_out_channels": [128, 256, 512, 512], "shift_factor": None})
    assert kl == VAEConfig("AutoencoderKL", 4, 8, 0.18215, 0.0)
    taesd = {"_class_name": "AutoencoderTiny", "decoder_block_out_channels": [64] * 4}
    assert _vae(tmp_path, taesd) == VAEConfig("AutoencoderTiny", 4, 8, 1.0, 0.0)
    flux_like = {"latent_channels": 16, "scaling_factor": 0.3611, "shift_factor": 0.1159}
    assert _vae(tmp_path, flux_like) == VAEConfig("AutoencoderKL", 16, 8, 0.3611, 0.1159)


def test_a_bad_vae_config_names_the_file_and_the_key(tmp_path):
    with pytest.raises(ModelError, match="vae_decoder/config.json: latent_channels must be an"):
        _vae(tmp_path, {"latent_channels": "4"})
    with pytest.raises(ModelError, match="describes a VQModel; lcm-lite decodes with an"):
        _vae(tmp_path, {"_class_name": "VQModel"})
