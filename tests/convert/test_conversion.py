"""conversion/: random-weight LCMs, and their export to the OpenVINO folder genai reads."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
ov = pytest.importorskip("openvino")

from conversion.__main__ import main  # noqa: E402
from conversion.clip_vocab import bytes_to_unicode, write_synthetic_clip_vocab  # noqa: E402
from conversion.export import MODEL_INDEX, convert  # noqa: E402
from conversion.random_model import (  # noqa: E402
    ARCHITECTURES,
    SCHEDULER_CONFIG,
    build_random_lcm,
)
from lcm_lite.errors import UsageError  # noqa: E402
from lcm_lite.models.staging import staged_directory  # noqa: E402

NETWORK_FOLDERS = ("text_encoder", "unet", "vae_decoder", "vae_encoder")


def _signature(xml: Path) -> dict[str, dict[str, tuple[str, list[int | None]]]]:
    """Inputs and outputs of an IR: name -> (element type, dims with None for dynamic)."""
    model = ov.Core().read_model(xml)

    def describe(ports):
        return {
            port.get_any_name(): (
                port.get_element_type().get_type_name(),
                [dim.get_length() if dim.is_static else None for dim in port.get_partial_shape()],
            )
            for port in ports
        }

    return {"inputs": describe(model.inputs), "outputs": describe(model.outputs)}


def _sibling_names(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.parent.iterdir())


# --- random-weight models -------------------------------------------------------------------


def test_synthetic_vocab_has_clip_layout_and_tokenizes_words(tmp_path):
    vocab_dir = write_synthetic_clip_vocab(tmp_path)
    vocab = json.loads((vocab_dir / "vocab.json").read_text(encoding="utf-8"))
    byte_symbols = list(bytes_to_unicode().values())
    ids = sorted(vocab, key=vocab.get)

    assert ids[:256] == byte_symbols
    assert ids[256:512] == [symbol + "</w>" for symbol in byte_symbols]
    assert ids[-2:] == ["<|startoftext|>", "<|endoftext|>"]
    assert 200 <= len(vocab) - 514 <= 1000  # a few hundred merges
    tokens = transformers.CLIPTokenizer.from_pretrained(vocab_dir).tokenize("a photo of a cat")
    assert tokens == ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"]


def test_tiny_random_lcm_is_wired_like_lcm_dreamshaper_v7(tiny_diffusers_dir):
    model_index = json.loads((tiny_diffusers_dir / "model_index.json").read_text())
    scheduler = json.loads((tiny_diffusers_dir / "scheduler" / "scheduler_config.json").read_text())
    unet = json.loads((tiny_diffusers_dir / "unet" / "config.json").read_text())
    vae = json.loads((tiny_diffusers_dir / "vae" / "config.json").read_text())

    assert model_index["_class_name"] == "LatentConsistencyModelPipeline"
    assert model_index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert model_index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert model_index["safety_checker"] == [None, None]
    assert scheduler["_class_name"] == "LCMScheduler"
    assert {key: scheduler[key] for key in SCHEDULER_CONFIG} == SCHEDULER_CONFIG
    assert unet["time_cond_proj_dim"] == 32
    assert 2 ** (len(vae["block_out_channels"]) - 1) == 8  # SD's latent scale factor
    for weights in ("unet/diffusion_pytorch_model", "vae/diffusion_pytorch_model"):
        assert (tiny_diffusers_dir / f"{weights}.safetensors").is_file()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tiny_diffusers_dir / "tokenizer" / name).is_file()


def test_tiny_random_lcm_renders_an_image_that_is_not_one_colour(tiny_diffusers_dir):
    pipe = diffusers.LatentConsistencyModelPipeline.from_pretrained(tiny_diffusers_dir)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a photo of a cat",
        num_inference_steps=2,
        width=64,
        height=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]

    assert image.shape == (64, 64, 3)
    assert image.std() > 0.05


def test_the_same_seed_builds_the_same_weights_and_another_seed_others(tmp_path, clip_vocab_dir):
    def unet_bytes(seed: int, name: str) -> bytes:
        out_dir = build_random_lcm(
            tmp_path / name, size="tiny", vocab_dir=clip_vocab_dir, seed=seed
        )
        return (out_dir / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()

    first, again, other = unet_bytes(7, "first"), unet_bytes(7, "again"), unet_bytes(8, "other")

    assert first == again
    assert first != other


def test_full_architecture_has_the_parameter_counts_of_sd15_with_lcm_guidance():
    """SD1.5's UNet (859,520,964) plus LCM's 256 -> 320 guidance projection, ViT-L/14 text."""
    full = ARCHITECTURES["full"]
    with torch.device("meta"):
        networks = {
            "unet": diffusers.UNet2DConditionModel(**full.unet),
            "vae": diffusers.AutoencoderKL(**full.vae),
            "text_encoder": transformers.CLIPTextModel(
                transformers.CLIPTextConfig(**full.text_encoder)
            ),
        }
    counts = {name: sum(p.numel() for p in net.parameters()) for name, net in networks.items()}

    assert counts == {
        "unet": 859_520_964 + 256 * 320,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
    }


# --- the exported folder --------------------------------------------------------------------


def test_export_writes_every_file_genai_and_optimum_read(tiny_ov_dir):
    expected = {
        "model_index.json",
        "scheduler/scheduler_config.json",
        *(
            f"tokenizer/{name}"
            for name in (
                "vocab.json",
                "merges.txt",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "openvino_tokenizer.xml",
                "openvino_tokenizer.bin",
                "openvino_detokenizer.xml",
                "openvino_detokenizer.bin",
            )
        ),
        *(
            f"{folder}/{name}"
            for folder in NETWORK_FOLDERS
            for name in ("openvino_model.xml", "openvino_model.bin", "config.json")
        ),
    }
    written = {str(path.relative_to(tiny_ov_dir)) for path in tiny_ov_dir.rglob("*")}

    assert expected <= written
    assert _sibling_names(tiny_ov_dir) == [tiny_ov_dir.name]  # no staging folder left


def test_openvino_tokenizer_gives_the_clip_tokenizer_ids_truncated_to_77(tiny_ov_dir):
    pytest.importorskip("openvino_tokenizers")  # registers the tokenizer operations
    tokenizer = transformers.CLIPTokenizer.from_pretrained(tiny_ov_dir / "tokenizer")
    ov_tokenizer = ov.Core().compile_model(tiny_ov_dir / "tokenizer" / "openvino_tokenizer.xml")
    for prompt in ["a beautiful pink unicorn, 8k", "a photo of a cat " * 30]:
        expected = tokenizer(prompt, truncation=True).input_ids
        ids = ov_tokenizer([prompt])["input_ids"][0]

        assert ids.tolist() == expected
        assert len(ids) <= 77


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        (
            "text_encoder",
            {
                "inputs": {"input_ids": ("i64", [None, 77])},
                "outputs": {
                    "last_hidden_state": ("f32", [None, 77, 32]),
                    "pooler_output": ("f32", [None, 32]),
                },
            },
        ),
        (
            "unet",
            {
                "inputs": {
                    "sample": ("f32", [None, 4, None, None]),
                    "timestep": ("i64", [None]),
                    "encoder_hidden_states": ("f32", [None, 77, 32]),
                    "timestep_cond": ("f32", [None, 32]),
                },
                "outputs": {"out_sample": ("f32", [None, 4, None, None])},
            },
        ),
        (
            "vae_decoder",
            {
                "inputs": {"latent_sample": ("f32", [None, 4, None, None])},
                "outputs": {"sample": ("f32", [None, 3, None, None])},
            },
        ),
        (
            "vae_encoder",
            {
                "inputs": {"sample": ("f32", [None, 3, None, None])},
                "outputs": {"latent_parameters": ("f32", [None, 8, None, None])},
            },
        ),
    ],
)
def test_ir_has_optimum_intel_names_types_and_dynamic_dims(tiny_ov_dir, folder, expected):
    assert _signature(tiny_ov_dir / folder / "openvino_model.xml") == expected


def test_model_index_and_configs_describe_the_source_lcm(tiny_ov_dir, tiny_diffusers_dir):
    """Configs are the source's, plus diffusers' record of the folder the weights came from."""

    def config(root: Path, relative: str) -> dict:
        return json.loads((root / relative).read_text())

    def loaded_from_source(relative: str) -> dict:
        return {**config(tiny_diffusers_dir, relative), "_name_or_path": str(tiny_diffusers_dir)}

    assert config(tiny_ov_dir, "model_index.json") == MODEL_INDEX
    assert config(tiny_ov_dir, "scheduler/scheduler_config.json") == config(
        tiny_diffusers_dir, "scheduler/scheduler_config.json"
    )
    assert config(tiny_ov_dir, "unet/config.json") == loaded_from_source("unet/config.json")
    for folder in ("vae_decoder", "vae_encoder"):
        assert config(tiny_ov_dir, f"{folder}/config.json") == loaded_from_source("vae/config.json")
    text_encoder = config(tiny_ov_dir, "text_encoder/config.json")
    assert text_encoder["model_type"] == "clip_text_model"
    assert text_encoder["max_position_embeddings"] == 77


def test_fp32_ir_matches_diffusers_at_latent_sizes_other_than_the_traced_one(
    tiny_ov_dir, tiny_diffusers_dir
):
    unet = diffusers.UNet2DConditionModel.from_pretrained(tiny_diffusers_dir, subfolder="unet")
    vae = diffusers.AutoencoderKL.from_pretrained(tiny_diffusers_dir, subfolder="vae")
    core = ov.Core()
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    ov_unet = core.compile_model(tiny_ov_dir / "unet" / "openvino_model.xml", "CPU", f32)
    ov_decoder = core.compile_model(tiny_ov_dir / "vae_decoder" / "openvino_model.xml", "CPU", f32)
    generator = torch.Generator().manual_seed(0)
    for batch, height, width in [(1, 8, 8), (2, 6, 10)]:
        sample = torch.randn(batch, 4, height, width, generator=generator)
        hidden = torch.randn(batch, 77, 32, generator=generator)
        cond = torch.randn(batch, 32, generator=generator)
        timestep = torch.tensor([759])
        with torch.no_grad():
            noise = unet(sample, timestep, hidden, timestep_cond=cond).sample.numpy()
            image = vae.decode(sample).sample.numpy()
        ov_noise = ov_unet(
            {
                "sample": sample.numpy(),
                "timestep": timestep.numpy(),
                "encoder_hidden_states": hidden.numpy(),
                "timestep_cond": cond.numpy(),
            }
        )["out_sample"]
        ov_image = ov_decoder({"latent_sample": sample.numpy()})["sample"]

        np.testing.assert_allclose(ov_noise, noise, atol=1e-4)
        np.testing.assert_allclose(ov_image, image, atol=1e-4)


def test_openvino_genai_generates_an_image_from_the_export(tiny_ov_dir):
    genai = pytest.importorskip("openvino_genai")
    pipe = genai.Text2ImagePipeline(tiny_ov_dir, "CPU")
    defaults = pipe.get_generation_config()
    image = pipe.generate(
        "a prompt", width=64, height=64, num_inference_steps=2, generator=genai.TorchGenerator(0)
    ).data

    assert (defaults.num_inference_steps, defaults.guidance_scale) == (4, 8.5)  # genai's LCM
    assert image.shape == (1, 64, 64, 3)
    assert image.dtype == np.uint8
    assert image.std() > 1


@pytest.mark.parametrize(
    ("weights", "options", "folders"),
    [
        ("fp16", [], NETWORK_FOLDERS),
        ("int8", ["--without-vae-encoder"], ("text_encoder", "unet", "vae_decoder")),
    ],
)
@pytest.mark.slow
def test_cli_exports_compressed_weights_that_compile_and_are_smaller_than_fp32(
    tmp_path, capsys, weights, options, folders, tiny_diffusers_dir, tiny_ov_dir
):
    out_dir = tmp_path / weights

    assert main([str(tiny_diffusers_dir), str(out_dir), "--weights", weights, *options]) == 0
    progress = capsys.readouterr().err
    for folder in folders:
        assert f"lcm-lite-convert: {folder}: {weights} IR written in " in progress
        ov.Core().compile_model(out_dir / folder / "openvino_model.xml", "CPU")
        size = (out_dir / folder / "openvino_model.bin").stat().st_size
        assert size < (tiny_ov_dir / folder / "openvino_model.bin").stat().st_size
    assert (out_dir / "vae_encoder").exists() == ("vae_encoder" in folders)


# --- refusals and failures ------------------------------------------------------------------


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("lcm-lite-convert: error: ")
    return lines[0]


def test_a_plain_stable_diffusion_source_exports_with_its_scheduler_and_no_timestep_cond(
    tiny_sd_ov_dir,
):
    model_index = json.loads((tiny_sd_ov_dir / "model_index.json").read_text())
    scheduler = json.loads((tiny_sd_ov_dir / "scheduler" / "scheduler_config.json").read_text())
    unet = ov.Core().read_model(tiny_sd_ov_dir / "unet" / "openvino_model.xml")
    assert model_index["_class_name"] == "StableDiffusionPipeline"
    assert scheduler["_class_name"] == "PNDMScheduler"
    assert [port.any_name for port in unet.inputs] == [
        "sample",
        "timestep",
        "encoder_hidden_states",
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/no/such/folder", "no such folder"),
        ("lcm-lite-tests/no-such-model", "cannot get lcm-lite-tests/no-such-model"),
    ],
)
def test_a_missing_source_is_a_one_line_model_error(tmp_path, capsys, source, message):
    assert main([source, str(tmp_path / "out")]) == 3
    assert message in _one_error_line(capsys)
    assert _sibling_names(tmp_path / "out") == []


def test_a_folder_without_model_index_is_not_a_pipeline(tmp_path, capsys):
    (tmp_path / "empty").mkdir()

    assert main([str(tmp_path / "empty"), str(tmp_path / "out")]) == 3
    assert "neither a diffusers pipeline" in _one_error_line(capsys)


def test_a_non_empty_output_folder_is_refused_without_force(tmp_path, tiny_diffusers_dir, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")

    assert main([str(tiny_diffusers_dir), str(out_dir)]) == 2
    assert "--force" in _one_error_line(capsys)
    assert (out_dir / "keep.txt").read_text() == "mine"


def test_an_unknown_weight_format_is_a_usage_error(tmp_path, tiny_diffusers_dir, capsys):
    assert main([str(tiny_diffusers_dir), str(tmp_path / "out"), "--weights", "int4"]) == 2
    assert "--weights" in _one_error_line(capsys)
    with pytest.raises(UsageError):
        convert(tiny_diffusers_dir, tmp_path / "out", weights="int4")


def test_force_replaces_the_folder_only_once_the_new_one_is_complete(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "old.txt").write_text("old")

    with staged_directory(out_dir, force=True) as staging:
        (staging / "new.txt").write_text("new")
        assert (out_dir / "old.txt").exists()

    assert sorted(path.name for path in out_dir.iterdir()) == ["new.txt"]
    assert _sibling_names(out_dir) == ["out"]


@pytest.mark.parametrize(
    ("fault", "exit_code", "existing"),
    [(KeyboardInterrupt(), 130, False), (OSError(28, "No space left on device"), 5, True)],
    ids=["ctrl-c", "disk-full-with-force"],
)
def test_an_export_failing_midway_leaves_no_half_model(
    tmp_path, tiny_diffusers_dir, monkeypatch, capsys, fault, exit_code, existing
):
    """Fault injection: ``openvino.save_model`` fails on its second file, the detokenizer, once
    model_index.json, the scheduler and the tokenizer's other files are written."""
    real_save_model = ov.save_model

    def failing_save_model(model, path, *args, **kwargs):
        if Path(path).name == "openvino_detokenizer.xml":
            raise fault
        return real_save_model(model, path, *args, **kwargs)

    monkeypatch.setattr(ov, "save_model", failing_save_model)
    out_dir = tmp_path / "out"
    if existing:
        out_dir.mkdir()
        (out_dir / "old.txt").write_text("old")

    assert main([str(tiny_diffusers_dir), str(out_dir), "--force", "-q"]) == exit_code
    _one_error_line(capsys)
    if existing:
        assert sorted(path.name for path in out_dir.iterdir()) == ["old.txt"]
        assert _sibling_names(out_dir) == ["out"]
    else:
        assert _sibling_names(out_dir) == []


@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.slow
def test_a_signal_mid_export_exits_with_its_code_and_leaves_no_folder(
    sigint_reaches_children, tmp_path, tiny_diffusers_dir, sig, exit_code
):
    """A real ``lcm-lite-convert`` process, signalled once its staging folder exists."""
    out_dir = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "conversion", str(tiny_diffusers_dir), str(out_dir), "-q"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(".out.*.partial")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert process.poll() is None, process.stderr.read()  # it is exporting now
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == exit_code, stderr
    assert stderr.splitlines()[-1].endswith("the output folder was not written")
    assert list(tmp_path.iterdir()) == []  # no out/, no .out.*.partial


def test_a_controlnet_converts_to_a_controlnet_folder_with_its_residuals_as_outputs(
    tiny_controlnet, tmp_path, capsys
):
    import openvino as ov

    source, converted = tiny_controlnet
    config = json.loads((source / "config.json").read_text())
    assert config["_class_name"] == "ControlNetModel"
    assert sorted(p.name for p in converted.iterdir()) == ["controlnet"]
    model = ov.Core().read_model(converted / "controlnet" / "openvino_model.xml")
    assert [port.any_name for port in model.inputs] == [
        "sample",
        "timestep",
        "encoder_hidden_states",
        "controlnet_cond",
    ]
    assert [port.any_name for port in model.outputs] == [
        *(f"down_block_res_sample_{i}" for i in range(4)),
        "mid_block_res_sample",
    ]

    assert main([str(source), str(tmp_path / "out"), "--quantize-unet"]) == 2
    assert "is a ControlNet: it has no UNet" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
