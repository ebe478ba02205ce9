"""LoRA adapters give diffusers' ``load_lora_weights`` + ``set_adapters`` image, and LCM-LoRA runs a
plain Stable Diffusion model as diffusers' StableDiffusionPipeline + LCMScheduler does.

Random LoRAs on the tiny random models: every UNet Linear and Conv2d (3x3 convs, time_emb_proj,
conv_shortcut, samplers) and the text encoder's layers, both factors random so that the LoRA moves
the image. lcm_lite runs the OpenVINO conversion with the f32 hint; one 8-bit level of tolerance
(int8 weights: ``INT8_LEVELS``, as diffusers has no int8).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lcm_lite import LCMPipeline
from lcm_lite.errors import ModelError, UsageError
from lcm_lite.images.png import read_png_metadata

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")
random_model = pytest.importorskip("conversion.random_model")

SIZE = {"width": 64, "height": 64}
PROMPT = "a lighthouse at dusk, oil painting"
INT8_LEVELS = 4  # int8 weights vs diffusers' float32: measured 2 levels at most on these models
MOVED = 1.0  # mean absolute change (8-bit levels) a random LoRA must make: not a no-op


@pytest.fixture(scope="session")
def tiny_ov_int8_dir(tmp_path_factory, tiny_diffusers_dir) -> Path:
    from conversion.export import convert

    return convert(tiny_diffusers_dir, tmp_path_factory.mktemp("tiny-int8") / "ov", weights="int8")


def _diffusers_images(pipe, loras, *, seed=5, **kwargs):
    """diffusers' images after ``load_lora_weights`` of each file and ``set_adapters`` weights."""
    names = [f"adapter{i}" for i in range(len(loras))]
    for (path, _), name in zip(loras, names, strict=True):
        pipe.load_lora_weights(str(path), adapter_name=name)
    if loras:
        pipe.set_adapters(names, adapter_weights=[weight for _, weight in loras])
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        PROMPT, num_inference_steps=4, generator=torch.Generator().manual_seed(seed), **kwargs
    ).images
    return np.stack([np.asarray(image) for image in images]).astype(int)


def _lcm_images(model_dir, loras, *, seed=5, prompt=PROMPT, **kwargs):
    pipe = LCMPipeline.from_pretrained(model_dir, precision="f32", loras=loras)
    result = pipe(prompt, steps=4, seed=seed, **SIZE, **kwargs)
    return np.stack([np.asarray(image) for image in result]).astype(int), result


def _lcm_reference(model_dir, loras, **kwargs):
    pipe = diffusers.LatentConsistencyModelPipeline.from_pretrained(model_dir)
    return _diffusers_images(pipe, loras, **SIZE, **kwargs)


def _sd_lcm_lora_reference(model_dir, loras, **kwargs):
    """diffusers' LCM-LoRA recipe: StableDiffusionPipeline, LCMScheduler from its config."""
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None)
    pipe.scheduler = diffusers.LCMScheduler.from_config(pipe.scheduler.config)
    return _diffusers_images(pipe, loras, **SIZE, **kwargs)


def _assert_moved_and_equal(ours, theirs, without_lora, levels=1):
    assert np.abs(theirs - without_lora).mean() > MOVED, "the random LoRA changed nothing"
    assert ours.std() > 10, "a flat image proves nothing"
    assert np.abs(ours - theirs).max() <= levels


@pytest.mark.parity
def test_a_kohya_lora_with_alpha_on_unet_and_text_encoder_gives_the_diffusers_image(
    tiny_diffusers_dir, tiny_ov_dir, kohya_lora
):
    from safetensors import safe_open

    with safe_open(kohya_lora, framework="numpy") as file:
        keys = list(file.keys())
        conv = file.get_tensor("lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight")
    for layer in ("conv_shortcut", "time_emb_proj", "downsamplers_0_conv", "lora_te_"):
        assert any(layer in key for key in keys), layer
    assert conv.shape[2:] == (3, 3)

    theirs = _lcm_reference(tiny_diffusers_dir, [(kohya_lora, 0.8)], guidance_scale=8.0)
    without = _lcm_reference(tiny_diffusers_dir, [], guidance_scale=8.0)
    ours, result = _lcm_images(tiny_ov_dir, [(kohya_lora, 0.8)], guidance_scale=8.0)
    _assert_moved_and_equal(ours, theirs, without)
    assert result.metadata(0, "m")["loras"] == f"{kohya_lora}:0.8"


@pytest.mark.parity
def test_a_peft_lora_with_metadata_alpha_gives_the_diffusers_image(
    tiny_diffusers_dir, tiny_ov_dir, peft_lora
):
    theirs = _lcm_reference(tiny_diffusers_dir, [(peft_lora, 1.0)], guidance_scale=4.0)
    without = _lcm_reference(tiny_diffusers_dir, [], guidance_scale=4.0)
    ours, _ = _lcm_images(tiny_ov_dir, [(peft_lora, 1.0)], guidance_scale=4.0)
    _assert_moved_and_equal(ours, theirs, without)


@pytest.mark.parity
def test_two_loras_blend_at_their_weights_as_diffusers_set_adapters(
    tiny_diffusers_dir, tiny_ov_dir, kohya_lora, peft_lora
):
    loras = [(kohya_lora, 0.7), (peft_lora, 0.3)]
    theirs = _lcm_reference(tiny_diffusers_dir, loras, guidance_scale=8.0)
    without = _lcm_reference(tiny_diffusers_dir, [], guidance_scale=8.0)
    ours, _ = _lcm_images(tiny_ov_dir, loras, guidance_scale=8.0)
    _assert_moved_and_equal(ours, theirs, without)


@pytest.fixture(scope="session")
def partial_alpha_lora(kohya_lora, tmp_path_factory) -> Path:
    """The kohya LoRA (rank 4) with differing alphas, on some layers only: UNet 1.0 (the most
    common), 3.0 or none; text encoder 0.5 (the most common), 2.0 or none."""
    from safetensors.numpy import load_file, save_file

    tensors = {k: v for k, v in load_file(str(kohya_lora)).items() if not k.endswith(".alpha")}
    stems = sorted(k.removesuffix(".lora_down.weight") for k in tensors if "lora_down" in k)
    for prefix, alphas in (
        ("lora_unet_", (1.0, 1.0, None, 3.0)),
        ("lora_te_", (0.5, 0.5, None, 2.0)),
    ):
        for i, stem in enumerate(s for s in stems if s.startswith(prefix)):
            if alphas[i % 4] is not None:
                tensors[f"{stem}.alpha"] = np.asarray(alphas[i % 4], np.float32)
    path = tmp_path_factory.mktemp("loras") / "partial-alpha.safetensors"
    save_file(tensors, str(path))
    return path


@pytest.mark.parity
def test_differing_kohya_alphas_scale_each_layer_as_diffusers_does(
    tiny_diffusers_dir, tiny_ov_dir, partial_alpha_lora
):
    """diffusers gives a network's most common alpha to its layers without one (not their rank)
    and to the attention projections (whose own alpha its kohya conversion loses); the others
    keep theirs."""
    from lcm_lite.models.folder import ModelFolder
    from lcm_lite.models.lora import open_adapters

    unet = ModelFolder.open(tiny_ov_dir).unet
    (adapter,) = open_adapters([(partial_alpha_lora, 1.0)], unet)
    for network, common, other in (("unet", 1.0, 3.0), ("text_encoder", 0.5, 2.0)):
        alphas = {module: pair.alpha for module, pair in adapter.layers[network].items()}
        attention = re.compile(r"(to_[qkv]|to_out_0|[qkv]_proj|out_proj)$")
        assert {a for m, a in alphas.items() if attention.search(m)} == {common}, network
        assert {a for m, a in alphas.items() if not attention.search(m)} == {common, other}

    theirs = _lcm_reference(tiny_diffusers_dir, [(partial_alpha_lora, 1.0)], guidance_scale=8.0)
    without = _lcm_reference(tiny_diffusers_dir, [], guidance_scale=8.0)
    ours, _ = _lcm_images(tiny_ov_dir, [(partial_alpha_lora, 1.0)], guidance_scale=8.0)
    _assert_moved_and_equal(ours, theirs, without)


@pytest.mark.parity
def test_on_int8_weights_a_lora_stays_within_the_stated_tolerance(
    tiny_diffusers_dir, tiny_ov_int8_dir, kohya_lora
):
    theirs = _lcm_reference(tiny_diffusers_dir, [(kohya_lora, 1.0)], guidance_scale=8.0)
    without = _lcm_reference(tiny_diffusers_dir, [], guidance_scale=8.0)
    ours, _ = _lcm_images(tiny_ov_int8_dir, [(kohya_lora, 1.0)], guidance_scale=8.0)
    _assert_moved_and_equal(ours, theirs, without, levels=INT8_LEVELS)


@pytest.mark.parametrize(
    ("guidance_scale", "negative_prompt"),
    [(1.0, None), (3.0, "blurry, low quality"), (3.0, None)],
)
@pytest.mark.parity
def test_a_plain_sd_model_with_an_lcm_lora_runs_as_diffusers_sd_pipeline_with_lcm_scheduler(
    tiny_sd_diffusers_dir, tiny_sd_ov_dir, lcm_lora, guidance_scale, negative_prompt
):
    kwargs = {"guidance_scale": guidance_scale, "negative_prompt": negative_prompt}
    theirs = _sd_lcm_lora_reference(tiny_sd_diffusers_dir, [(lcm_lora, 1.0)], **kwargs)
    without = _sd_lcm_lora_reference(tiny_sd_diffusers_dir, [], **kwargs)
    ours, result = _lcm_images(tiny_sd_ov_dir, [(lcm_lora, 1.0)], **kwargs)
    _assert_moved_and_equal(ours, theirs, without)
    metadata = result.metadata(0, "m")
    assert metadata.get("negative_prompt") == (
        None if guidance_scale <= 1 else negative_prompt or ""
    )


@pytest.mark.parity
@pytest.mark.convert
@pytest.mark.slow
def test_an_lcm_lora_fused_at_export_gives_the_image_of_the_lora_applied_at_run_time(
    tiny_sd_diffusers_dir, tiny_sd_ov_dir, lcm_lora, tmp_path
):
    from conversion.__main__ import main as convert_main

    fused_dir = tmp_path / "fused"
    argv = [str(tiny_sd_diffusers_dir), str(fused_dir), "--weights", "fp32", "-q"]
    assert convert_main([*argv, "--lora", f"{lcm_lora}:0.9"]) == 0
    model_index = json.loads((fused_dir / "model_index.json").read_text())
    assert model_index["scheduler"] == ["diffusers", "LCMScheduler"]
    assert model_index["_lcm_lite_fused_loras"] == [f"{lcm_lora}:0.9"]
    kwargs = {"guidance_scale": 2.0, "negative_prompt": "blurry"}
    fused, _ = _lcm_images(fused_dir, [], **kwargs)
    applied, _ = _lcm_images(tiny_sd_ov_dir, [(lcm_lora, 0.9)], **kwargs)
    theirs = _sd_lcm_lora_reference(tiny_sd_diffusers_dir, [(lcm_lora, 0.9)], **kwargs)
    assert np.abs(fused - applied).max() <= 1
    assert np.abs(fused - theirs).max() <= 1


def test_a_plain_sd_model_without_lora_is_refused_with_a_hint_naming_lcm_lora(tiny_sd_ov_dir):
    with pytest.raises(ModelError, match="add an LCM-LoRA") as error:
        LCMPipeline.from_pretrained(tiny_sd_ov_dir)
    assert "\n" not in str(error.value)


def test_a_latent_consistency_model_refuses_a_negative_prompt(f32_pipe):
    with pytest.raises(UsageError, match="takes no negative prompt"):
        f32_pipe("a cat", negative_prompt="a dog", **SIZE)


def test_the_compiled_cache_keeps_one_blob_per_adapter_weight(tiny_ov_dir, kohya_lora, tmp_path):
    cache = tmp_path / "cache"
    for weight in (0.5, 1.0, 0.5):
        pipe = LCMPipeline.from_pretrained(
            tiny_ov_dir, precision="f32", cache_dir=cache, loras=[(kohya_lora, weight)]
        )
        pipe("a cat", steps=1, seed=1, **SIZE)
    blobs = {path.name.split("-")[0] for path in cache.glob("*.blob")}
    assert blobs == {"text_encoder", "unet", "vae_decoder"}
    assert len(list(cache.glob("unet-*.blob"))) == 2  # 0.5 and 1.0; the third run imported


def test_with_runtime_weights_one_cached_blob_serves_every_blend(tiny_ov_dir, kohya_lora, tmp_path):
    cache = tmp_path / "cache"
    for weight in (0.5, 1.0):
        pipe = LCMPipeline.from_pretrained(
            tiny_ov_dir,
            precision="f32",
            cache_dir=cache,
            loras=[(kohya_lora, weight)],
            lora_mode="runtime",
        )
        pipe("a cat", steps=1, seed=1, lora_weights=[0.25], **SIZE)
    assert len(list(cache.glob("unet-*.blob"))) == 1
    assert len(list(cache.glob("text_encoder-*.blob"))) == 1


def _damaged(tmp_path: Path, name: str, tensors: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    path = tmp_path / name
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda p: p / "missing.safetensors", UsageError, "LoRA not found"),
        (
            lambda p: (
                (p / "junk.safetensors").write_bytes(b"not a safetensors file")
                and p / "junk.safetensors"
            ),
            ModelError,
            "is not a safetensors file",
        ),
        (
            lambda p: _damaged(p, "weights.safetensors", {"conv.weight": np.ones((2, 2))}),
            ModelError,
            "is not a LoRA for Stable Diffusion 1.5",
        ),
        (
            lambda p: _damaged(
                p,
                "sdxl.safetensors",
                {
                    "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": np.ones(
                        (4, 32), np.float32
                    ),
                    "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": np.ones(
                        (64, 4), np.float32
                    ),
                },
            ),
            ModelError,
            "names no UNet or text encoder layer",
        ),
        (
            lambda p: _damaged(
                p,
                "half.safetensors",
                {"lora_unet_conv_in.lora_down.weight": np.ones((4, 4, 3, 3), np.float32)},
            ),
            ModelError,
            "has no .lora_up.weight partner",
        ),
    ],
)
def test_a_file_that_is_not_a_usable_lora_is_one_line_error_at_load(
    tiny_ov_dir, tmp_path, make, error, message
):
    with pytest.raises(error, match=message) as raised:
        LCMPipeline.from_pretrained(tiny_ov_dir, loras=[(str(make(tmp_path)), 1.0)])
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "loras", [[("x.safetensors",)], [("x.safetensors", "strong")], [("x", np.nan)]]
)
def test_loras_that_are_not_file_weight_pairs_are_a_usage_error(tiny_ov_dir, loras):
    with pytest.raises(UsageError, match="pairs|finite number"):
        LCMPipeline.from_pretrained(tiny_ov_dir, loras=loras)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (
            {
                "lora_unet_down_blocks_9_resnets_0_conv1.lora_down.weight": np.ones(
                    (4, 32, 3, 3), np.float32
                ),
                "lora_unet_down_blocks_9_resnets_0_conv1.lora_up.weight": np.ones(
                    (32, 4, 1, 1), np.float32
                ),
            },
            "1 tensor\\(s\\) match no layer of the UNet, e.g. "
            "lora_unet_down_blocks_9_resnets_0_conv1.lora_down.weight",
        ),
        (
            {  # SD 1.5's 320 channels on the tiny model's 32
                "lora_unet_conv_in.lora_down.weight": np.ones((4, 4, 3, 3), np.float32),
                "lora_unet_conv_in.lora_up.weight": np.ones((320, 4, 1, 1), np.float32),
            },
            "lora_unet_conv_in.lora_down.weight does not fit the model",
        ),
    ],
)
def test_a_lora_for_another_model_is_a_one_line_error_naming_the_tensor(
    tiny_ov_dir, tmp_path, tensors, message
):
    path = _damaged(tmp_path, "other.safetensors", tensors)
    pipe = LCMPipeline.from_pretrained(tiny_ov_dir, loras=[(str(path), 1.0)])
    with pytest.raises(ModelError, match=message) as raised:
        pipe("a cat", steps=1, **SIZE)
    assert "\n" not in str(raised.value)


@pytest.mark.parity
def test_ldm_block_names_map_as_diffusers_maps_them():
    """A1111 (LDM) names of SD 1.5's UNet, against diffusers' own conversion."""
    from diffusers.loaders.lora_conversion_utils import (
        _convert_unet_lora_key,
        _maybe_map_sgm_blocks_to_diffusers,
    )

    from lcm_lite.models.lora import _ldm_to_diffusers

    names = [
        "input_blocks_1_1_transformer_blocks_0_attn1_to_q",
        "input_blocks_1_0_in_layers_2",
        "input_blocks_2_0_emb_layers_1",
        "input_blocks_4_0_skip_connection",
        "input_blocks_3_0_op",
        "input_blocks_8_1_proj_in",
        "middle_block_0_out_layers_3",
        "middle_block_1_transformer_blocks_0_ff_net_2",
        "middle_block_2_in_layers_2",
        "output_blocks_4_1_proj_out",
        "output_blocks_6_0_skip_connection",
        "output_blocks_11_1_transformer_blocks_0_attn2_to_k",
    ]
    config = type("Config", (), {"layers_per_block": 2})
    for name in names:
        key = f"lora_unet_{name}.lora_down.weight"
        (key,) = _maybe_map_sgm_blocks_to_diffusers({key: 0}, config)
        theirs = re.sub(r"[._]lora\.down\.weight$", "", _convert_unet_lora_key(key))
        theirs = theirs.replace(".processor", "")
        assert _ldm_to_diffusers(name, 2) == theirs.replace(".", "_"), name


@pytest.mark.cli
def test_the_cli_applies_weighted_loras_and_records_them_with_the_negative_prompt(
    tiny_sd_ov_dir, lcm_lora, tmp_path
):
    out = tmp_path / "out.png"
    argv = [sys.executable, "-m", "lcm_lite", "a red cube", "--model", str(tiny_sd_ov_dir)]
    argv += ["--lora", f"{lcm_lora}:0.9", "--negative-prompt", "blurry", "--guidance", "2"]
    argv += ["--width", "64", "--height", "64", "--seed", "3", "--out", str(out), "--json"]
    argv += ["--no-cache", "--precision", "f32"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert run.returncode == 0, run.stderr
    line = json.loads(run.stdout)
    assert line["loras"] == f"{lcm_lora}:0.9"
    assert line["negative_prompt"] == "blurry"
    metadata = read_png_metadata(out)
    assert metadata["loras"] == f"{lcm_lora}:0.9" and metadata["negative_prompt"] == "blurry"
    direct, _ = _lcm_images(
        tiny_sd_ov_dir,
        [(lcm_lora, 0.9)],
        prompt="a red cube",
        seed=3,
        guidance_scale=2.0,
        negative_prompt="blurry",
    )
    assert np.abs(np.asarray(read_png(out))[None].astype(int) - direct).max() <= 1


def read_png(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lora", "no/such/lora/file.safetensors"], "LoRA not found"),
        ([], "add an LCM-LoRA"),
    ],
)
@pytest.mark.cli
def test_the_cli_rejects_a_missing_lora_or_a_plain_model_in_one_line(
    tiny_sd_ov_dir, tmp_path, args, message
):
    argv = [sys.executable, "-m", "lcm_lite", "a red cube", "--model", str(tiny_sd_ov_dir), *args]
    argv += ["--out", str(tmp_path / "x.png"), "--no-cache"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert run.returncode in (2, 3)
    assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def _generate_with_hub_lora(model_dir, source, hub_url, hf_home, out):
    """The CLI in a fresh process against a loopback hub (huggingface_hub reads HF_ENDPOINT and
    HF_HOME when imported)."""
    environment = {**os.environ, "HF_ENDPOINT": hub_url, "HF_HOME": str(hf_home)}
    for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "NO_PROXY", "no_proxy"):
        environment.pop(name, None)
    argv = [sys.executable, "-m", "lcm_lite", "a red cube", "--model", str(model_dir)]
    argv += ["--lora", f"{source}:0.8", "--width", "64", "--height", "64", "--seed", "3"]
    argv += ["--out", str(out), "--no-cache", "--precision", "f32"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=environment)


def test_a_hub_lora_is_downloaded_once_and_gives_the_local_files_image(
    tiny_ov_dir, kohya_lora, tmp_path
):
    from test_hub import FakeHub

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pytorch_lora_weights.safetensors").write_bytes(kohya_lora.read_bytes())
    (repo / "other.safetensors").write_bytes(b"not fetched")
    hub = FakeHub("someone/style-lora", repo)
    try:
        run = _generate_with_hub_lora(
            tiny_ov_dir, "someone/style-lora", hub.url, tmp_path / "hf", tmp_path / "hub.png"
        )
    finally:
        hub.close()
    assert run.returncode == 0, run.stderr
    assert hub.fetched == ["pytorch_lora_weights.safetensors"]
    local, _ = _lcm_images(tiny_ov_dir, [(kohya_lora, 0.8)], prompt="a red cube", seed=3)
    assert np.array_equal(np.asarray(read_png(tmp_path / "hub.png"))[None], local)


@pytest.mark.cli
@pytest.mark.slow
def test_a_hub_lora_whose_download_is_cut_is_exit_code_3_in_one_line(
    tiny_ov_dir, kohya_lora, tmp_path
):
    from test_hub import FakeHub

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "style.safetensors").write_bytes(kohya_lora.read_bytes())
    hub = FakeHub("someone/style-lora", repo, cut_short="style.safetensors")
    try:
        run = _generate_with_hub_lora(
            tiny_ov_dir,
            "someone/style-lora/style.safetensors",
            hub.url,
            tmp_path / "hf",
            tmp_path / "cut.png",
        )
    finally:
        hub.close()
    assert run.returncode == 3, run.stderr
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("lcm-lite: error: cannot download someone/style-lora: ")
    assert "the connection to the hub was lost" in last
    assert not (tmp_path / "cut.png").exists()


# -- the blend per call: lora_weights -----------------------------------------------------------

BLENDS = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.7, 0.3), (1.5, -0.5)]


@pytest.fixture(scope="module")
def runtime_pipe(tiny_ov_dir, kohya_lora, peft_lora):
    """Both random LoRAs loaded at (1.0, 1.0), their weights a network input."""
    return LCMPipeline.from_pretrained(
        tiny_ov_dir,
        precision="f32",
        loras=[(kohya_lora, 1.0), (peft_lora, 1.0)],
        lora_mode="runtime",
    )


def _compiled_objects(pipe) -> tuple[object, object, object]:
    networks = pipe._networks
    return networks, networks._held[("unet", False)], networks._held[("text_encoder", None)]


@pytest.mark.parity
def test_lora_weights_per_call_give_diffusers_set_adapters_images_with_no_compile(
    tiny_diffusers_dir, runtime_pipe, kohya_lora, peft_lora
):
    reference = diffusers.LatentConsistencyModelPipeline.from_pretrained(tiny_diffusers_dir)
    reference.set_progress_bar_config(disable=True)
    reference.load_lora_weights(str(kohya_lora), adapter_name="kohya")
    reference.load_lora_weights(str(peft_lora), adapter_name="peft")
    runtime_pipe(PROMPT, steps=1, seed=5, **SIZE)  # compiles once
    compiled = _compiled_objects(runtime_pipe)
    theirs_by_blend = {}
    for blend in BLENDS:
        reference.set_adapters(["kohya", "peft"], adapter_weights=list(blend))
        generator = torch.Generator().manual_seed(5)
        image = reference(
            PROMPT, num_inference_steps=4, generator=generator, guidance_scale=8.0, **SIZE
        ).images[0]
        theirs = np.asarray(image).astype(int)
        result = runtime_pipe(PROMPT, steps=4, seed=5, lora_weights=list(blend), **SIZE)
        ours = np.asarray(result[0]).astype(int)
        assert not any(key.startswith("compile_") for key in result.timings), blend
        assert _compiled_objects(runtime_pipe) == compiled
        assert ours.std() > 10, "a flat image proves nothing"
        assert np.abs(ours - theirs).max() <= 1, blend
        assert result.metadata(0, "m")["lora_weights"] == ",".join(repr(w) for w in blend)
        theirs_by_blend[blend] = theirs
    references = list(theirs_by_blend.values())
    for i, first in enumerate(references):
        for second in references[i + 1 :]:  # each blend is its own image in diffusers
            assert np.abs(first - second).mean() > MOVED


def test_a_weight_of_zero_turns_an_adapter_off_exactly(runtime_pipe, f32_pipe, tiny_ov_dir):
    kwargs = {"steps": 2, "seed": 9, **SIZE}
    off = np.asarray(runtime_pipe(PROMPT, lora_weights=[0, 0], **kwargs)[0])
    without = np.asarray(f32_pipe(PROMPT, **kwargs)[0])
    assert np.array_equal(off, without)
    on = np.asarray(runtime_pipe(PROMPT, lora_weights=[1, 0], **kwargs)[0])
    assert np.abs(on.astype(int) - off).mean() > MOVED


def test_the_default_blend_is_the_load_weights_and_fixed_mode_compiles_them_in(
    tiny_ov_dir, kohya_lora, peft_lora, runtime_pipe
):
    loras = [(kohya_lora, 0.7), (peft_lora, 0.3)]
    fixed = LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32", loras=loras)
    kwargs = {"steps": 2, "seed": 4, **SIZE}
    compiled_in = fixed(PROMPT, **kwargs)
    assert "lora_weights" not in [
        p.any_name for p in fixed._networks._held[("unet", False)].compiled.inputs
    ]
    assert compiled_in.settings.request.lora_weights == (0.7, 0.3)
    as_input = runtime_pipe(PROMPT, lora_weights=[0.7, 0.3], **kwargs)
    assert np.abs(np.asarray(compiled_in[0]).astype(int) - np.asarray(as_input[0])).max() <= 1


def test_auto_mode_compiles_once_more_at_the_first_other_blend_then_never(
    tiny_ov_dir, kohya_lora, peft_lora
):
    pipe = LCMPipeline.from_pretrained(
        tiny_ov_dir, precision="f32", loras=[(kohya_lora, 1.0), (peft_lora, 0.5)]
    )
    kwargs = {"steps": 1, "seed": 4, **SIZE}

    def compiled(**fields) -> set[str]:
        timings = pipe(PROMPT, **kwargs, **fields).timings
        return {name.removeprefix("compile_") for name in timings if name.startswith("compile_")}

    assert compiled() == {"text_encoder", "unet", "vae_decoder"}  # the load blend, compiled in
    assert compiled(lora_weights=[1.0, 0.5]) == set()  # the same blend
    assert compiled(lora_weights=[0.2, 0.5]) == {"text_encoder", "unet"}  # weights an input now
    assert compiled(lora_weights=[0.0, 1.0]) == set()
    assert compiled() == set()


@pytest.mark.parametrize(
    ("lora_weights", "message"),
    [
        ([0.5], "lora_weights needs 2 weight\\(s\\), one per LoRA loaded .*, got 1"),
        ([0.5, 0.5, 0.5], "got 3"),
        ([0.5, float("nan")], "lora_weights must be"),
    ],
)
def test_lora_weights_that_are_not_one_per_adapter_are_a_one_line_usage_error(
    runtime_pipe, lora_weights, message
):
    with pytest.raises(UsageError, match=message) as raised:
        runtime_pipe(PROMPT, steps=1, lora_weights=lora_weights, **SIZE)
    assert "\n" not in str(raised.value)


def test_lora_weights_without_loras_are_a_usage_error(f32_pipe):
    with pytest.raises(UsageError, match="needs LoRA adapters loaded"):
        f32_pipe(PROMPT, steps=1, lora_weights=[1.0], **SIZE)


@pytest.mark.cli
def test_the_remake_command_of_a_blend_makes_the_same_image(tiny_ov_dir, kohya_lora, tmp_path):
    out, again = tmp_path / "blend.png", tmp_path / "again.png"
    argv = [sys.executable, "-m", "lcm_lite", "a red cube", "--model", str(tiny_ov_dir)]
    argv += ["--lora", f"{kohya_lora}:1.0", "--lora-weights", "0.25", "--lora-mode", "runtime"]
    argv += ["--width", "64", "--height", "64", "--seed", "3", "--steps", "2"]
    argv += ["--no-cache", "--precision", "f32", "-q"]
    run = subprocess.run([*argv, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    metadata = read_png_metadata(out)
    assert metadata["lora_weights"] == "0.25" and metadata["loras"] == f"{kohya_lora}:1"
    info = [sys.executable, "-m", "lcm_lite", "info", str(out)]
    run = subprocess.run(info, capture_output=True, text=True, timeout=300)
    (command,) = [line for line in run.stdout.splitlines() if line.startswith("remake: ")]
    words = shlex.split(command.removeprefix("remake: "))
    assert words[0] == "lcm-lite" and "--lora-weights=0.25" in words
    remake = [sys.executable, "-m", "lcm_lite", *words[1:], "--out", str(again)]
    remake += ["--no-cache", "--precision", "f32", "-q"]
    run = subprocess.run(remake, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert np.array_equal(np.asarray(read_png(out)), np.asarray(read_png(again)))
    bad = subprocess.run(
        [*argv, "--lora-weights", "0.5,0.5", "--out", str(tmp_path / "bad.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "lora_weights needs 1 weight(s)" in bad.stderr
    assert not (tmp_path / "bad.png").exists()
