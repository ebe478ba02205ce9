"""``lcm-lite-convert FILE.safetensors OUT``: single-file Stable Diffusion 1.5 checkpoints in the
original (LDM) layout, read by diffusers' ``from_single_file``; other families refused.

The checkpoint is a random "small" model (SD 1.5's 4 levels of 2 layers, attention where SD 1.5
has it, tiny widths) written in the original layout by ``conversion.original_layout`` (its keys
and tensors are those diffusers' ``scripts/convert_diffusers_to_original_stable_diffusion.py``
writes, plus the ``text_model.`` transformers 5 no longer saves).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from safetensors.numpy import save_file  # noqa: E402

from conversion.__main__ import main  # noqa: E402
from conversion.checkpoint import _shipped_config  # noqa: E402
from conversion.original_layout import write_original_checkpoint  # noqa: E402
from conversion.random_model import build_random_lora, build_random_sd  # noqa: E402
from lcm_lite import LCMPipeline  # noqa: E402
from lcm_lite.models.tokenizer import CLIPTokenizer  # noqa: E402

SIZE = {"width": 64, "height": 64}


@pytest.fixture(scope="module")
def small_sd_dir(tmp_path_factory, clip_vocab_dir) -> Path:
    out_dir = tmp_path_factory.mktemp("small-sd") / "diffusers"
    return build_random_sd(out_dir, size="small", vocab_dir=clip_vocab_dir, seed=0)


@pytest.fixture(scope="module")
def small_checkpoint(small_sd_dir, tmp_path_factory) -> Path:
    return write_original_checkpoint(
        small_sd_dir, tmp_path_factory.mktemp("checkpoint") / "my-model.safetensors"
    )


@pytest.fixture(scope="module")
def small_config_dir(small_sd_dir, tmp_path_factory) -> Path:
    """The small model's configs and tokenizer without its weights: its ``--config DIR``."""
    config = tmp_path_factory.mktemp("config") / "small-sd-config"
    shutil.copytree(small_sd_dir, config, ignore=shutil.ignore_patterns("*.safetensors"))
    return config


@pytest.fixture(scope="module")
def small_lcm_lora(small_sd_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("loras") / "lcm-lora.safetensors"
    return build_random_lora(small_sd_dir, path, rank=8, alpha=8.0, text_encoder=False, seed=3)


def _image(model_dir: Path, loras=None) -> np.ndarray:
    pipe = LCMPipeline.from_pretrained(model_dir, precision="f32", loras=loras)
    result = pipe("a lighthouse at dusk", steps=2, seed=7, guidance_scale=1.0, **SIZE)
    return np.asarray(result[0]).astype(int)


@pytest.mark.slow
def test_a_checkpoint_converts_to_the_image_of_the_folder_it_was_written_from(
    small_sd_dir, small_checkpoint, small_config_dir, small_lcm_lora, tmp_path, capsys
):
    from_folder, from_file, baked = tmp_path / "folder", tmp_path / "file", tmp_path / "baked"
    common = ["--weights", "fp32", "-q"]
    assert main([str(small_sd_dir), str(from_folder), *common]) == 0
    config = ["--config", str(small_config_dir)]
    assert main([str(small_checkpoint), str(from_file), *config, *common]) == 0
    lora = ["--lora", f"{small_lcm_lora}:1.0"]
    assert main([str(small_checkpoint), str(baked), *config, *lora, *common]) == 0
    assert capsys.readouterr().err == ""
    assert not list(tmp_path.glob(".checkpoint-*"))  # the scratch folder is gone

    theirs = _image(from_folder, [(small_lcm_lora, 1.0)])
    ours = _image(from_file, [(small_lcm_lora, 1.0)])
    assert theirs.std() > 10
    assert np.array_equal(ours, theirs)
    assert np.abs(_image(baked) - theirs).max() <= 1  # the LCM-LoRA fused at export


def test_the_shipped_configs_and_tokenizer_are_stable_diffusion_15s(tmp_path):
    """The configs describe SD 1.5's networks (parameter counts of stable-diffusion-v1-5), and the
    tokenizer written from the shipped merges is CLIP's 49,408-token one (known ids)."""
    config = _shipped_config(tmp_path / "sd15")
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel.from_config(
            diffusers.UNet2DConditionModel.load_config(config / "unet")
        )
        vae = diffusers.AutoencoderKL.from_config(
            diffusers.AutoencoderKL.load_config(config / "vae")
        )
        text_encoder = transformers.CLIPTextModel(
            transformers.CLIPTextConfig.from_pretrained(config / "text_encoder")
        )
    counts = [sum(p.numel() for p in net.parameters()) for net in (unet, vae, text_encoder)]
    assert counts == [859_520_964, 83_653_863, 123_060_480]
    scheduler = diffusers.PNDMScheduler.from_pretrained(config / "scheduler")
    assert (scheduler.config.beta_end, scheduler.config.steps_offset) == (0.012, 1)

    theirs = transformers.CLIPTokenizer.from_pretrained(config / "tokenizer")
    ours = CLIPTokenizer.from_folder(config / "tokenizer")
    expected = [49406, 320, 1215, 3360, 15660, 267, 279, 330, 49407]
    assert len(theirs) == 49408
    assert theirs("a beautiful pink unicorn, 8k").input_ids == expected
    assert list(ours(["a beautiful pink unicorn, 8k"]).input_ids[0][: len(expected)]) == expected


def _file(tmp_path: Path, name: str, tensors: dict[str, tuple[int, ...]]) -> Path:
    path = tmp_path / name
    save_file({key: np.zeros(shape, np.float16) for key, shape in tensors.items()}, str(path))
    return path


_UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (
            {"conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (1280,)},
            "is an SDXL checkpoint",
        ),
        (
            {
                "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (
                    320,
                    1024,
                )
            },
            "is a Stable Diffusion 2.x checkpoint",
        ),
        ({_UNET_IN: (320, 9, 3, 3)}, "is a Stable Diffusion 1.x inpainting checkpoint"),
        (
            {_UNET_IN: (320, 4, 3, 3), "first_stage_model.decoder.conv_in.weight": (512, 4, 3, 3)},
            "has no CLIP text encoder (cond_stage_model.transformer) weights",
        ),
        (
            {"lora_unet_conv_in.lora_down.weight": (4, 4, 3, 3)},
            "it looks like a LoRA: pass it with --lora",
        ),
    ],
)
def test_a_checkpoint_of_another_family_is_refused_in_one_line_naming_it(
    tmp_path, capsys, tensors, message
):
    path = _file(tmp_path, "model.safetensors", tensors)
    assert main([str(path), str(tmp_path / "out")]) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".*"))


def test_a_pickled_checkpoint_needs_allow_pickle(tmp_path, capsys):
    path = tmp_path / "model.ckpt"
    sdxl = {"conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": torch.ones(2)}
    torch.save({"state_dict": sdxl}, path)
    assert main([str(path), str(tmp_path / "out")]) == 2
    refused = capsys.readouterr().err.strip().splitlines()
    assert len(refused) == 1 and "model.ckpt is a pickle (.ckpt)" in refused[0]
    assert "--allow-pickle" in refused[0]
    assert main([str(path), str(tmp_path / "out"), "--allow-pickle"]) == 3  # read: it is SDXL
    assert "is an SDXL checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"), [(b"\x00garbage", "cannot read model.safetensors")]
)
def test_a_damaged_checkpoint_is_a_one_line_error(tmp_path, capsys, content, message):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    assert main([str(path), str(tmp_path / "out")]) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_config_is_refused_for_a_folder_source_and_when_it_is_no_config(
    tmp_path, capsys, small_checkpoint
):
    (tmp_path / "empty").mkdir()
    assert main([str(small_checkpoint), str(tmp_path / "out"), "--config", str(tmp_path)]) == 2
    assert "has no model_index.json" in capsys.readouterr().err
    assert main([str(tmp_path / "empty"), str(tmp_path / "o"), "--config", str(tmp_path)]) == 2
    assert "--config is for a single-file checkpoint" in capsys.readouterr().err
