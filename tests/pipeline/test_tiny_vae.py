"""The tiny autoencoder (TAESD, diffusers' AutoencoderTiny): conversion, the same image as diffusers
with it, ``vae="tiny"``, previews of every step, and the errors around it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from importlib import metadata

import numpy as np
import openvino as ov
import pytest
from PIL import Image

from lcm_lite import LCMPipeline, ModelError, UsageError
from lcm_lite.images.png import read_png_metadata

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

PROMPT = "a beautiful pink unicorn, 8k"


@pytest.fixture(scope="module")
def taesd(tiny_taesd_dir):
    vae = diffusers.AutoencoderTiny.from_pretrained(tiny_taesd_dir)
    return vae.eval()


@pytest.fixture(scope="module")
def tiny_pipe(tiny_ov_dir, tiny_taesd_ov_dir):
    return LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32", tiny_vae=tiny_taesd_ov_dir)


def _compile_f32(xml):
    return ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _assert_varied(image):
    """Not a flat or clipped reference: pixels spread and mostly inside (0, 255)."""
    pixels = np.asarray(image).astype(float)
    assert pixels.std() > 20
    assert ((pixels > 0) & (pixels < 255)).mean() > 0.8


# conversion


@pytest.mark.convert
def test_conversion_writes_the_fastsd_tiny_vae_layout(tiny_taesd_ov_dir):
    assert sorted(p.name for p in tiny_taesd_ov_dir.iterdir()) == ["vae_decoder", "vae_encoder"]
    for part in ("vae_decoder", "vae_encoder"):
        for name in ("openvino_model.xml", "openvino_model.bin", "config.json"):
            assert (tiny_taesd_ov_dir / part / name).is_file()
        config = json.loads((tiny_taesd_ov_dir / part / "config.json").read_text())
        assert config["_class_name"] == "AutoencoderTiny"
    decoder = ov.Core().read_model(tiny_taesd_ov_dir / "vae_decoder" / "openvino_model.xml")
    assert decoder.inputs[0].any_name == "latent_sample"
    assert decoder.outputs[0].any_name == "sample"
    encoder = ov.Core().read_model(tiny_taesd_ov_dir / "vae_encoder" / "openvino_model.xml")
    assert encoder.outputs[0].any_name == "latent_sample"


@pytest.mark.parity
def test_the_decoder_ir_equals_autoencoder_tiny_decode_on_random_latents(taesd, tiny_taesd_ov_dir):
    latents = np.random.default_rng(0).standard_normal((2, 4, 12, 16), dtype=np.float32)
    with torch.no_grad():
        theirs = taesd.decode(torch.from_numpy(latents)).sample.numpy()
    ours = _compile_f32(tiny_taesd_ov_dir / "vae_decoder" / "openvino_model.xml")(latents)[0]
    assert ours.shape == (2, 3, 96, 128)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-4)
    assert theirs.std() > 0.3  # the random decoder's images vary ...
    assert (np.abs(theirs) < 1).mean() > 0.9  # ... and lie mostly inside [-1, 1]


@pytest.mark.parity
def test_the_encoder_ir_gives_autoencoder_tiny_latents_deterministically(taesd, tiny_taesd_ov_dir):
    image = np.random.default_rng(1).uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)
    with torch.no_grad():
        theirs = taesd.encode(torch.from_numpy(image)).latents.numpy()
    encoder = _compile_f32(tiny_taesd_ov_dir / "vae_encoder" / "openvino_model.xml")
    first, second = encoder(image)[0].copy(), encoder(image)[0].copy()
    assert first.shape == (1, 4, 8, 12)
    np.testing.assert_allclose(first, theirs, atol=1e-5, rtol=1e-4)
    np.testing.assert_array_equal(first, second)
    assert theirs.std() > 0.3


@pytest.mark.parametrize("weights", ["fp16", "int8"])
@pytest.mark.convert
@pytest.mark.slow
def test_compressed_weights_decode_close_to_fp32(
    tiny_taesd_dir, tiny_taesd_ov_dir, weights, tmp_path
):
    from conversion.export import convert

    out = convert(tiny_taesd_dir, tmp_path / weights, weights=weights)
    latents = np.random.default_rng(2).standard_normal((1, 4, 8, 8), dtype=np.float32)
    exact = _compile_f32(tiny_taesd_ov_dir / "vae_decoder" / "openvino_model.xml")(latents)[0]
    compressed = _compile_f32(out / "vae_decoder" / "openvino_model.xml")(latents)[0]
    assert np.abs(compressed - exact).max() < 0.1


@pytest.mark.convert
@pytest.mark.slow
def test_the_convert_command_recognises_a_tiny_vae_folder(tiny_taesd_dir, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "conversion", str(tiny_taesd_dir), str(tmp_path / "out"), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "vae_decoder" / "openvino_model.xml").is_file()


@pytest.mark.convert
@pytest.mark.slow
def test_converting_a_folder_that_is_neither_an_lcm_nor_a_tiny_vae_is_one_line(tmp_path):
    source = tmp_path / "something"
    source.mkdir()
    (source / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    run = subprocess.run(
        [sys.executable, "-m", "conversion", str(source), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 3
    assert "neither a diffusers pipeline" in run.stderr
    assert run.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.convert
@pytest.mark.slow
def test_converting_taesd_offline_without_it_in_the_cache_is_one_line(tmp_path):
    environment = {k: v for k, v in os.environ.items() if k != "HF_HUB_CACHE"}
    run = subprocess.run(
        [sys.executable, "-m", "conversion", "madebyollin/taesd", str(tmp_path / "taesd-ov")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**environment, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 3
    assert run.stderr.count("\n") == 1
    assert "madebyollin/taesd" in run.stderr and "not in the cache" in run.stderr
    assert not (tmp_path / "taesd-ov").exists()


@pytest.mark.convert
def test_a_failed_export_names_the_installed_versions(tmp_path):
    from conversion.export import _to_openvino
    from conversion.networks import Network

    class Untraceable(torch.nn.Module):
        def forward(self, sample):
            raise RuntimeError("no trace")

    network = Network(
        folder="unet",
        module=Untraceable(),
        inputs={"sample": ([1, 4], ov.Type.f32)},
        example={"sample": torch.zeros((1, 4))},
        outputs=("out_sample",),
        write_config=lambda _path: None,
    )
    with pytest.raises(ModelError) as raised:
        _to_openvino(network, "fp32")
    message = str(raised.value)
    assert message.startswith("cannot convert the unet to OpenVINO: ")
    for library in ("torch", "diffusers", "transformers"):
        assert f"{library} {metadata.version(library)}" in message


# the same image as diffusers with AutoencoderTiny


@pytest.fixture(scope="module")
def diffusers_taesd_pipe(tiny_diffusers_dir, taesd):
    pipe = diffusers.LatentConsistencyModelPipeline.from_pretrained(tiny_diffusers_dir, vae=taesd)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parity
def test_the_tiny_vae_image_equals_diffusers_with_autoencoder_tiny(
    tiny_pipe, diffusers_taesd_pipe, steps
):
    theirs = diffusers_taesd_pipe(
        PROMPT,
        num_inference_steps=steps,
        guidance_scale=8.0,
        width=64,
        height=64,
        num_images_per_prompt=2,
        generator=torch.Generator().manual_seed(1234567),
    ).images
    ours = tiny_pipe(
        PROMPT, steps=steps, width=64, height=64, num_images=2, seed=1234567, vae="tiny"
    )
    assert len(ours) == len(theirs) == 2
    for mine, reference in zip(ours, theirs, strict=True):
        _assert_varied(reference)
        difference = np.abs(np.asarray(mine).astype(int) - np.asarray(reference).astype(int))
        assert difference.max() <= 1


# the API


def test_vae_tiny_decodes_with_the_tiny_vae_and_records_it(tiny_pipe):
    full = tiny_pipe(PROMPT, width=64, height=64, seed=5)
    tiny = tiny_pipe(PROMPT, width=64, height=64, seed=5, vae="tiny")
    assert tiny_pipe.has_previews
    assert not np.array_equal(np.asarray(full[0]), np.asarray(tiny[0]))
    assert full.metadata(0, "m")["vae"] == "full"
    assert tiny.metadata(0, "m")["vae"] == "tiny"


def _picture(width: int = 64, height: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(3).integers(0, 255, (height, width, 3), np.uint8))


def test_image_to_image_encodes_with_the_encoder_of_the_vae_in_use(tiny_ov_dir, tiny_taesd_ov_dir):
    pipe = LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32", tiny_vae=tiny_taesd_ov_dir)
    arguments = {"image": _picture(), "strength": 0.6, "steps": 2, "seed": 4}

    tiny = pipe(PROMPT, vae="tiny", **arguments)
    full = pipe(PROMPT, vae="full", **arguments)

    assert "compile_tiny_vae_encoder" in tiny.timings and "compile_vae_encoder" not in tiny.timings
    assert "compile_vae_encoder" in full.timings and "compile_tiny_vae_encoder" not in full.timings
    again = pipe(PROMPT, vae="tiny", **arguments)  # both encoders stay compiled
    assert not any(name.endswith("encoder") for name in again.timings if "compile" in name)
    np.testing.assert_array_equal(np.asarray(again[0]), np.asarray(tiny[0]))


def test_a_tiny_vae_without_its_encoder_decodes_but_image_to_image_with_it_says_what_is_missing(
    tiny_ov_dir, tiny_taesd_ov_dir, tmp_path
):
    decoder_only = tmp_path / "taesd-decoder-only"
    shutil.copytree(tiny_taesd_ov_dir, decoder_only, ignore=shutil.ignore_patterns("vae_encoder"))
    pipe = LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32", tiny_vae=decoder_only)
    assert pipe(PROMPT, width=64, height=64, seed=1, steps=1, vae="tiny")[0].size == (64, 64)
    assert pipe(PROMPT, image=_picture(), steps=1, seed=1)[0].size == (64, 48)  # vae="full"

    with pytest.raises(ModelError) as error:
        pipe(PROMPT, image=_picture(), steps=1, seed=1, vae="tiny")

    message = str(error.value)
    assert "\n" not in message
    assert f"the tiny VAE {decoder_only} has no encoder (vae_encoder/)" in message
    assert "lcm-lite-convert madebyollin/taesd FOLDER" in message


def test_without_a_tiny_vae_there_are_no_previews_and_vae_tiny_is_a_usage_error(f32_pipe):
    assert not f32_pipe.has_previews
    with pytest.raises(UsageError, match="tiny_vae="):
        f32_pipe(PROMPT, width=64, height=64, seed=1, vae="tiny")
    errors = []

    def ask_for_a_preview(info):
        with pytest.raises(UsageError, match="previews need a tiny VAE") as raised:
            info.preview()
        errors.append(raised.value)

    f32_pipe(PROMPT, width=64, height=64, seed=1, steps=2, callback=ask_for_a_preview)
    assert len(errors) == 2


def test_an_unknown_vae_is_a_usage_error(tiny_pipe):
    with pytest.raises(UsageError, match='vae must be "full" or "tiny"'):
        tiny_pipe(PROMPT, width=64, height=64, vae="medium")


@pytest.mark.parametrize("vae", ["full", "tiny"])
def test_a_callback_gets_a_preview_of_every_step_the_last_one_the_tiny_image(tiny_pipe, vae):
    previews = []
    result = tiny_pipe(
        PROMPT,
        steps=4,
        width=64,
        height=96,
        num_images=2,
        seed=3,
        vae=vae,
        callback=lambda info: previews.append(info.preview()),
    )
    assert len(previews) == 4
    for images in previews:
        assert [image.size for image in images] == [(64, 96), (64, 96)]
    assert not np.array_equal(np.asarray(previews[0][0]), np.asarray(previews[-1][0]))
    tiny = tiny_pipe(PROMPT, steps=4, width=64, height=96, num_images=2, seed=3, vae="tiny")
    for preview, final in zip(previews[-1], tiny, strict=True):
        np.testing.assert_array_equal(np.asarray(preview), np.asarray(final))
    if vae == "full":
        assert not np.array_equal(np.asarray(result[0]), np.asarray(tiny[0]))


def test_a_preview_can_be_decoded_from_another_thread_after_its_step(tiny_pipe):
    infos = []
    tiny_pipe(PROMPT, steps=2, width=64, height=64, seed=4, callback=infos.append)
    previews = []
    worker = threading.Thread(target=lambda: previews.append(infos[0].preview()))
    worker.start()
    worker.join()
    assert len(previews[0]) == 1 and previews[0][0].size == (64, 64)


def test_previews_are_decoded_only_when_asked(tiny_ov_dir, tiny_taesd_ov_dir):
    pipe = LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32", tiny_vae=tiny_taesd_ov_dir)
    result = pipe(PROMPT, steps=2, width=64, height=64, seed=1, callback=lambda info: None)
    assert "compile_tiny_vae_decoder" not in result.timings


# a model whose own decoder is TAESD


@pytest.fixture(scope="module")
def lcm_with_taesd_decoder(tiny_ov_dir, tiny_taesd_ov_dir, tmp_path_factory):
    """The tiny LCM with TAESD swapped in as its vae_decoder (as optimum-intel can export it)."""
    folder = tmp_path_factory.mktemp("lcm-taesd") / "model"
    shutil.copytree(tiny_ov_dir, folder)
    shutil.rmtree(folder / "vae_decoder")
    shutil.copytree(tiny_taesd_ov_dir / "vae_decoder", folder / "vae_decoder")
    return folder


def test_a_model_whose_vae_decoder_is_autoencoder_tiny_decodes_with_it(
    lcm_with_taesd_decoder, tiny_pipe
):
    pipe = LCMPipeline.from_pretrained(lcm_with_taesd_decoder, precision="f32")
    assert pipe.has_previews
    own = pipe(PROMPT, width=64, height=64, seed=9)
    separate = tiny_pipe(PROMPT, width=64, height=64, seed=9, vae="tiny")
    np.testing.assert_array_equal(np.asarray(own[0]), np.asarray(separate[0]))
    previews = []
    pipe(PROMPT, width=64, height=64, seed=9, callback=previews.append)
    np.testing.assert_array_equal(np.asarray(previews[-1].preview()[0]), np.asarray(own[0]))


# errors


def test_a_tiny_vae_with_other_latent_channels_is_refused(tiny_ov_dir, tiny_taesd_ov_dir, tmp_path):
    other = tmp_path / "taesd-16"
    shutil.copytree(tiny_taesd_ov_dir, other)
    config_path = other / "vae_decoder" / "config.json"
    config = json.loads(config_path.read_text())
    config["latent_channels"] = 16
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelError, match="16-channel latents"):
        LCMPipeline.from_pretrained(tiny_ov_dir, tiny_vae=other)


def test_a_folder_that_is_not_a_tiny_vae_is_refused(tiny_ov_dir, tmp_path):
    with pytest.raises(ModelError, match="not a tiny VAE"):
        LCMPipeline.from_pretrained(tiny_ov_dir, tiny_vae=tiny_ov_dir)  # an AutoencoderKL
    with pytest.raises(ModelError, match="not a tiny VAE folder"):
        LCMPipeline.from_pretrained(tiny_ov_dir, tiny_vae=tmp_path)
    with pytest.raises(ModelError, match="tiny VAE folder not found"):
        LCMPipeline.from_pretrained(tiny_ov_dir, tiny_vae=str(tmp_path / "missing"))


def test_a_tiny_vae_given_as_the_model_says_so(tiny_taesd_ov_dir):
    with pytest.raises(ModelError, match="is a tiny VAE .* --tiny-vae"):
        LCMPipeline.from_pretrained(tiny_taesd_ov_dir)


# the command line


def _lcm_lite(*args, cwd, env=None):
    environment = {k: v for k, v in os.environ.items() if k != "HF_HUB_CACHE"}
    return subprocess.run(
        [sys.executable, "-m", "lcm_lite", *args],
        cwd=cwd,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.cli
def test_the_cli_vae_tiny_option_writes_the_tiny_image_and_records_it(
    tiny_ov_dir, tiny_taesd_ov_dir, tiny_pipe, tmp_path
):
    common = ["--model", str(tiny_ov_dir), "--width", "64", "--height", "64", "--seed", "11"]
    common += ["--precision", "f32", "--no-cache", "-q"]
    run = _lcm_lite(
        PROMPT, *common, "--vae", "tiny", "--tiny-vae", str(tiny_taesd_ov_dir), "--out",
        "tiny.png", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert read_png_metadata(tmp_path / "tiny.png")["vae"] == "tiny"
    expected = tiny_pipe(PROMPT, width=64, height=64, seed=11, vae="tiny")
    with Image.open(tmp_path / "tiny.png") as image:
        np.testing.assert_array_equal(np.asarray(image), np.asarray(expected[0]))
    run = _lcm_lite(PROMPT, *common, "--out", "full.png", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert read_png_metadata(tmp_path / "full.png")["vae"] == "full"


@pytest.mark.cli
def test_the_default_tiny_vae_offline_and_not_cached_is_one_line_saying_what_to_do(
    tiny_ov_dir, tmp_path
):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    run = _lcm_lite(
        PROMPT, "--model", str(tiny_ov_dir), "--vae", "tiny", "--no-cache", cwd=tmp_path, env=env
    )
    assert run.returncode == 3
    assert run.stderr.count("\n") == 1
    assert "rupeshs/taesd-ov is not in the local Hugging Face cache" in run.stderr
    assert "--tiny-vae FOLDER" in run.stderr
    assert "lcm-lite-convert madebyollin/taesd" in run.stderr
    assert not list(tmp_path.glob("*.png"))


def test_the_default_tiny_vae_comes_from_the_hub_cache(tiny_ov_dir, tiny_taesd_ov_dir, tmp_path):
    from test_hub import _lay_out_hub_cache

    _lay_out_hub_cache(tmp_path / "hf", "rupeshs/taesd-ov", tiny_taesd_ov_dir)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    run = _lcm_lite(
        PROMPT, "--model", str(tiny_ov_dir), "--vae", "tiny", "--width", "64", "--height", "64",
        "--seed", "2", "--out", "out.png", "--no-cache", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert read_png_metadata(tmp_path / "out.png")["vae"] == "tiny"


def test_a_hub_tiny_vae_fetches_its_encoder_on_the_first_image_to_image_call_only(
    tiny_ov_dir, tiny_taesd_ov_dir, tmp_path
):
    from test_hub import FakeHub

    _picture().save(tmp_path / "start.png")
    hub = FakeHub("someone/taesd-ov", tiny_taesd_ov_dir)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
    common = ["--model", str(tiny_ov_dir), "--vae", "tiny", "--tiny-vae", "someone/taesd-ov"]
    common += ["--steps", "1", "--no-cache", "-q"]

    def fetched_by(*args: str) -> set[str]:
        hub.fetched.clear()
        run = _lcm_lite(PROMPT, *common, *args, cwd=tmp_path, env=env)
        assert run.returncode == 0, run.stderr
        return {name.split("/")[0] for name in hub.fetched}

    try:
        assert fetched_by("--width", "64", "--height", "64", "--seed", "1") == {"vae_decoder"}
        assert fetched_by("--image", "start.png", "--seed", "1") == {"vae_encoder"}
        assert fetched_by("--image", "start.png", "--seed", "2") == set()
    finally:
        hub.close()


@pytest.mark.cli
def test_bench_and_info_take_the_tiny_vae(tiny_ov_dir, tiny_taesd_ov_dir, capsys):
    from lcm_lite.cli.main import main

    argv = ["--model", str(tiny_ov_dir), "--tiny-vae", str(tiny_taesd_ov_dir), "--no-cache"]
    size = ["--sizes", "64", "--steps", "1", "--images", "1", "--json"]
    assert main(["bench", *argv, *size, "--vae", "tiny"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["vae"] == "tiny"
    assert sorted(report["rows"][0]["compile"]) == ["text_encoder", "tiny_vae_decoder", "unet"]
    assert main(["info", *argv]) == 0
    assert f"tiny VAE (previews, --vae tiny): {tiny_taesd_ov_dir} (AutoencoderTiny" in (
        capsys.readouterr().out
    )


@pytest.mark.cli
def test_a_tiny_vae_with_other_latent_channels_exits_3_in_one_line(
    tiny_ov_dir, tiny_taesd_ov_dir, tmp_path
):
    other = tmp_path / "taesd-16"
    shutil.copytree(tiny_taesd_ov_dir, other)
    config_path = other / "vae_decoder" / "config.json"
    config_path.write_text(
        json.dumps({**json.loads(config_path.read_text()), "latent_channels": 16})
    )
    run = _lcm_lite(
        PROMPT, "--model", str(tiny_ov_dir), "--tiny-vae", str(other), "--vae", "tiny",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 3
    assert run.stderr.count("\n") == 1
    assert "16-channel latents" in run.stderr
