"""``python -m lcm_lite`` as a user runs it: a real process on the tiny converted model."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys

import numpy as np
import openvino as ov
import pytest
from PIL import Image

from lcm_lite.images.png import read_png_metadata, save_png

PROMPT = "a beautiful pink unicorn, 8k"


@pytest.fixture(scope="module")
def compiled_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("compiled-cache")


@pytest.fixture
def lcm(tiny_ov_dir, compiled_cache, tmp_path):
    """Run ``python -m lcm_lite ARGS`` in ``tmp_path`` on the tiny model, at 64x64 by default."""

    def run(*args, model=True, size=True, env=None, **kwargs):
        argv = [sys.executable, "-m", "lcm_lite", *args]
        if model:
            argv += ["--model", str(tiny_ov_dir)]
        if size:
            argv += ["--width", "64", "--height", "64"]
        environment = {**os.environ, "LCM_LITE_CACHE": str(compiled_cache), **(env or {})}
        streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
        return subprocess.run(
            argv, cwd=tmp_path, env=environment, text=True, timeout=300, **streams
        )

    return run


def _pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_a_prompt_alone_generates_a_png_named_after_prompt_and_seed(lcm, tmp_path):
    run = lcm(PROMPT, "--seed", "1234567")
    assert run.returncode == 0, run.stderr
    path = tmp_path / "a-beautiful-pink-unicorn-8k-1234567.png"
    assert run.stdout.strip() == f"{path.name}  (seed 1234567)" or str(path) in run.stdout
    assert _pixels(path).shape == (64, 64, 3)


def test_the_generate_word_is_optional(lcm, tmp_path):
    run = lcm("generate", PROMPT, "--seed", "5", "--out", "x.png")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "x.png").is_file()


def test_png_metadata_records_how_to_make_the_image_again(lcm, tmp_path, tiny_ov_dir):
    run = lcm(PROMPT, "--seed", "42", "--steps", "2", "--guidance", "3.5", "--out", "u.png")
    assert run.returncode == 0, run.stderr
    metadata = read_png_metadata(tmp_path / "u.png")
    assert metadata["prompt"] == PROMPT
    assert metadata["seed"] == "42"
    assert metadata["steps"] == "2"
    assert metadata["guidance"] == "3.5"
    assert (metadata["width"], metadata["height"]) == ("64", "64")
    assert metadata["model"] == str(tiny_ov_dir)
    info = lcm("info", "u.png", model=False, size=False)
    assert info.returncode == 0, info.stderr
    assert "seed: 42" in info.stdout.splitlines()
    assert f"prompt: {PROMPT}" in info.stdout.splitlines()


@pytest.mark.parametrize(
    ("prompt", "options", "recorded"),
    [
        (
            PROMPT,
            ["--steps", "3", "--original-inference-steps", "20"],
            {"steps": "3", "timesteps": "999,699,349", "original_inference_steps": "20"},
        ),
        (
            "-a 'quoted' prompt; $HOME",
            ["--steps", "4", "--timesteps", "999,759,259"],
            {"steps": "3", "timesteps": "999,759,259", "custom_timesteps": "999,759,259"},
        ),
        (
            PROMPT,
            ["--image", "start.png", "--strength", "0.6"],
            {"steps": "4", "timesteps": "599,459,299,159", "strength": "0.6"},
        ),
        (
            PROMPT,
            ["--image", "start.png", "--strength", "0.5", "--timesteps", "999,759,499,259"],
            {"timesteps": "499,259", "custom_timesteps": "999,759,499,259", "strength": "0.5"},
        ),
    ],
)
def test_info_prints_a_command_line_that_remakes_the_image(
    lcm, tmp_path, tiny_ov_dir, start_picture, prompt, options, recorded
):
    start_picture("png")
    model = ["--model", str(tiny_ov_dir), "--width", "64", "--height", "64"]
    run = lcm(
        "generate",
        "--seed",
        "9",
        *options,
        *model,
        "--out",
        "first.png",
        "--",
        prompt,
        model=False,
        size=False,
    )
    assert run.returncode == 0, run.stderr
    metadata = read_png_metadata(tmp_path / "first.png")
    assert {key: metadata[key] for key in recorded} == recorded
    info = lcm("info", "first.png", model=False, size=False)
    assert info.returncode == 0, info.stderr
    command = info.stdout.splitlines()[-1].removeprefix("remake: ")
    argv = shlex.split(command)
    assert argv[:2] == ["lcm-lite", "generate"]
    again = lcm("generate", "--out", "again.png", *argv[2:], model=False, size=False)
    assert again.returncode == 0, again.stderr
    assert np.array_equal(_pixels(tmp_path / "first.png"), _pixels(tmp_path / "again.png"))
    assert read_png_metadata(tmp_path / "again.png") == metadata


def test_the_same_seed_gives_the_same_image_and_another_seed_another(lcm, tmp_path):
    for name, seed in (("a.png", "7"), ("b.png", "7"), ("c.png", "8")):
        assert lcm(PROMPT, "--seed", seed, "--out", name).returncode == 0
    assert np.array_equal(_pixels(tmp_path / "a.png"), _pixels(tmp_path / "b.png"))
    assert not np.array_equal(_pixels(tmp_path / "a.png"), _pixels(tmp_path / "c.png"))


def test_without_a_seed_the_random_seed_is_printed_and_reproduces_the_image(lcm, tmp_path):
    run = lcm(PROMPT, "--out", "first.png", "--json")
    seed = json.loads(run.stdout)["seed"]
    assert lcm(PROMPT, "--out", "again.png", "--seed", str(seed)).returncode == 0
    assert np.array_equal(_pixels(tmp_path / "first.png"), _pixels(tmp_path / "again.png"))


def test_an_existing_file_is_never_overwritten(lcm, tmp_path):
    (tmp_path / "taken.png").write_bytes(b"mine")
    run = lcm(PROMPT, "--seed", "1", "--out", "taken.png")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "taken.png").read_bytes() == b"mine"
    assert _pixels(tmp_path / "taken-1.png").shape == (64, 64, 3)
    assert "taken-1.png" in run.stdout


def test_an_output_folder_gets_unique_names_for_repeated_runs(lcm, tmp_path):
    for _ in range(2):
        assert lcm(PROMPT, "--seed", "3", "--out", "gallery").returncode == 0
    names = sorted(p.name for p in (tmp_path / "gallery").iterdir())
    assert names == ["a-beautiful-pink-unicorn-8k-3-1.png", "a-beautiful-pink-unicorn-8k-3.png"]


def test_num_images_writes_one_file_per_image(lcm, tmp_path):
    run = lcm(PROMPT, "--seed", "9", "--num-images", "2", "--out", "pair", "--json")
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["index"] for line in lines] == [0, 1]
    assert {line["seed"] for line in lines} == {9}
    paths = [tmp_path / line["path"] for line in lines]
    assert all(p.is_file() for p in paths)
    assert not np.array_equal(_pixels(paths[0]), _pixels(paths[1]))


def test_json_lines_carry_path_seed_prompt_and_timings(lcm, tmp_path):
    run = lcm(PROMPT, "--seed", "11", "--steps", "3", "--json")
    assert run.returncode == 0, run.stderr
    (line,) = [json.loads(text) for text in run.stdout.splitlines()]
    assert line["prompt"] == PROMPT
    assert line["seed"] == 11
    assert (tmp_path / line["path"]).is_file()
    assert {"text_encoder", "unet_step_1", "unet_step_3", "vae_decoder"} <= set(line["timings"])
    assert all(seconds >= 0 for seconds in line["timings"].values())


def test_a_prompts_file_runs_every_prompt_in_one_process(lcm, tmp_path):
    (tmp_path / "prompts.txt").write_text("a red cube\n\na blue sphere\na green cone\n")
    run = lcm("--prompts", "prompts.txt", "--seed", "4", "--json", "--out", "batch")
    assert run.returncode == 0, run.stderr
    lines = [json.loads(text) for text in run.stdout.splitlines()]
    assert [line["prompt"] for line in lines] == ["a red cube", "a blue sphere", "a green cone"]
    assert len(list((tmp_path / "batch").glob("*.png"))) == 3


def test_a_byte_order_mark_in_a_prompts_file_is_not_part_of_any_prompt(lcm, tmp_path):
    (tmp_path / "bom.txt").write_bytes("\ufeff\r\na red cube\r\n".encode())
    run = lcm("--prompts", "bom.txt", "--seed", "4", "--json", "--out", "bom")
    assert run.returncode == 0, run.stderr
    lines = [json.loads(text) for text in run.stdout.splitlines()]
    assert [line["prompt"] for line in lines] == ["a red cube"]  # no prompt of the BOM alone
    plain = lcm("a red cube", "--seed", "4", "--json", "--out", "plain")
    same = json.loads(plain.stdout)["path"]
    assert np.array_equal(_pixels(tmp_path / lines[0]["path"]), _pixels(tmp_path / same))
    assert read_png_metadata(tmp_path / lines[0]["path"])["prompt"] == "a red cube"


@pytest.mark.parametrize(
    ("encoding", "message"),
    [("utf-16", "is UTF-16 or UTF-32 text"), ("utf-16-le", "is UTF-16"), ("latin-1", "not UTF-8")],
)
def test_a_prompts_file_not_in_utf8_is_refused_in_one_line(lcm, tmp_path, encoding, message):
    (tmp_path / "p.txt").write_bytes("a café\n".encode(encoding))
    run = lcm("--prompts", "p.txt", "--seed", "4")
    assert run.returncode == 2
    assert run.stderr.startswith("lcm-lite: error: ") and run.stderr.count("\n") == 1
    assert message in run.stderr and "save it as UTF-8" in run.stderr
    assert not list(tmp_path.glob("*.png"))


def test_quiet_mode_prints_nothing_on_stderr(lcm):
    run = lcm(" ".join(["word"] * 100), "--seed", "1", "-q")
    assert run.returncode == 0
    assert run.stderr == ""


def test_a_too_long_prompt_warns_how_many_tokens_were_dropped(lcm):
    run = lcm(" ".join(["word"] * 100), "--seed", "1")
    assert run.returncode == 0
    assert "tokens dropped" in run.stderr


def _terminal_stderr(lcm, *args):
    """What ``lcm(*args)`` writes to a stderr that is a terminal (a 120-column pseudo-terminal)."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    run = lcm(*args, stderr=follower)
    os.close(follower)
    seen = b""
    while chunk := _read_or_empty(leader):
        seen += chunk
    os.close(leader)
    assert run.returncode == 0
    return seen.decode()


def _read_or_empty(fd):
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the other end is closed and everything was read
        return b""


def test_progress_shows_each_stage_with_elapsed_and_remaining_time_on_a_terminal_only(
    lcm, tmp_path
):
    seen = _terminal_stderr(lcm, PROMPT, "--seed", "1", "--steps", "3", "--no-cache")
    for stage in ("compile text encoder", "compile UNet", "steps", "decode"):
        assert f"{stage}: 100%" in seen
    assert re.search(r"steps: 100%.*\| 3/3 \[\d\d:\d\d<00:00", seen)  # elapsed<remaining
    assert re.search(r"steps: +33%.*\| 1/3 \[\d\d:\d\d<", seen)
    assert _terminal_stderr(lcm, PROMPT, "--seed", "1", "-q") == ""
    piped = lcm(PROMPT, "--seed", "1").stderr  # a pipe is not a terminal
    assert "steps" not in piped
    assert "compil" not in piped


def test_the_compiled_model_cache_is_used_unless_no_cache(lcm, tmp_path):
    cache = tmp_path / "cache"
    assert lcm(PROMPT, "--seed", "1", env={"LCM_LITE_CACHE": str(cache)}).returncode == 0
    blobs = sorted(cache.iterdir())  # one compiled network per file, no temporary left
    assert [blob.name.split("-")[0] for blob in blobs] == ["text_encoder", "unet", "vae_decoder"]
    core = ov.Core()
    for blob in blobs:
        assert blob.suffix == ".blob"
        compiled = core.import_model(blob.read_bytes(), "CPU")  # a network OpenVINO imports
        assert compiled.inputs and compiled.outputs
    unet = core.import_model(blobs[1].read_bytes(), "CPU")
    assert list(unet.outputs[0].get_shape())[2:] == [8, 8]  # compiled for 64x64: 8x8 latents
    fresh = tmp_path / "fresh"
    run = lcm(PROMPT, "--seed", "1", "--no-cache", env={"LCM_LITE_CACHE": str(fresh)})
    assert run.returncode == 0
    assert not fresh.exists()


def test_f32_precision_and_the_auto_device_are_accepted(lcm):
    run = lcm(PROMPT, "--seed", "1", "--precision", "f32", "--device", "AUTO")
    assert run.returncode == 0, run.stderr


def test_info_describes_the_model_its_inputs_devices_and_cache(lcm, tiny_ov_dir):
    run = lcm("info", size=False)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert f"model: {tiny_ov_dir}" in out
    for expected in (
        "text_encoder:",
        "unet:",
        "vae_decoder:",
        "input sample: f32",
        "input timestep_cond: f32",
        f"devices: CPU ({ov.Core().get_property('CPU', 'FULL_DEVICE_NAME')})",
        "compiled-model cache:",
    ):
        assert expected in out


def test_help_lists_every_option_and_the_other_commands(lcm):
    run = lcm("--help", model=False, size=False)
    assert run.returncode == 0
    for option in (
        "--steps",
        "--guidance",
        "--seed",
        "--width",
        "--height",
        "--num-images",
        "--out",
        "--prompts",
        "--device",
        "--precision",
        "--json",
        "--no-cache",
        "--model",
        "--revision",
        "--image",
        "--strength",
        "--vae",
        "--tiny-vae",
        "-q",
        "info",
        "bench",
        "serve",
    ):
        assert option in run.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["x", "--width", "60"], 2, "width must be a multiple of 8"),
        (["x", "--steps", "0"], 2, "steps must be from 1"),
        (["x", "--seed", "-1"], 2, "seed must be an integer from 0 to 2**64-1"),
        (["x", "--steps", "four"], 2, "expected an integer"),
        ([], 2, "give a prompt"),
        (["x", "--device", "NPU"], 4, "device 'NPU' is not available"),
        (["x", "--clip-skip", "3"], 2, "clip_skip must be from 0 to 2 (this text encoder's"),
        (["x", "--clip-skip", "-1"], 2, "clip_skip must be an integer from 0 to the text"),
        (["(x:1..4)", "--prompt-weighting"], 2, "prompt weight '1..4' is not a number"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(lcm, tmp_path, args, code, message):
    run = lcm(*args, size=False)
    assert run.returncode == code
    assert run.stderr.startswith("lcm-lite: error: ")
    assert message in run.stderr
    assert run.stderr.count("\n") == 1
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_batch_exits_with_the_signal_code_and_leaves_only_whole_pngs(
    sigint_reaches_children, lcm, tiny_ov_dir, compiled_cache, tmp_path, sig, code
):
    (tmp_path / "prompts.txt").write_text("\n".join(f"prompt {i}" for i in range(200)))
    argv = [
        sys.executable,
        "-m",
        "lcm_lite",
        "--prompts",
        "prompts.txt",
        "--model",
        str(tiny_ov_dir),
        "--width",
        "128",
        "--height",
        "128",
        "--steps",
        "8",
        "--json",
        "--seed",
        "1",
        "--out",
        "out",
    ]
    process = subprocess.Popen(
        argv,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LCM_LITE_CACHE": str(compiled_cache)},
    )
    first = process.stdout.readline()  # the first image is written: we are mid-batch now
    assert first, process.stderr.read()
    process.send_signal(sig)
    rest, stderr = process.communicate(timeout=60)
    assert process.returncode == code
    assert stderr.strip().splitlines()[-1] in ("lcm-lite: interrupted", "lcm-lite: terminated")
    written = {json.loads(line)["path"] for line in [first, *rest.splitlines()]}
    on_disk = {str(p.relative_to(tmp_path)) for p in (tmp_path / "out").iterdir()}
    assert on_disk == written  # no partial or temporary file
    for path in on_disk:
        assert _pixels(tmp_path / path).shape == (128, 128, 3)


# --- image to image ---------------------------------------------------------------------------


@pytest.fixture
def start_picture(tmp_path):
    """Write a varied 100x75 picture as ``start.<suffix>`` in the run's folder."""

    def write(suffix: str = "jpg") -> str:
        rows, columns = np.mgrid[0:75, 0:100]
        noise = np.random.default_rng(0).integers(0, 60, (75, 100, 3))
        pixels = np.stack([columns * 2, rows * 3, (rows + columns) * 1.4], -1) + noise
        picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        picture.save(tmp_path / f"start.{suffix}")
        return f"start.{suffix}"

    return write


@pytest.mark.parametrize("suffix", ["png", "jpg", "webp"])
def test_an_image_and_strength_start_from_the_picture_at_its_size(
    lcm, tmp_path, start_picture, suffix
):
    name = start_picture(suffix)
    run = lcm(
        "a watercolour", "--image", name, "--strength", "0.6", "--seed", "5", "--json", size=False
    )
    assert run.returncode == 0, run.stderr
    (line,) = [json.loads(text) for text in run.stdout.splitlines()]
    assert (line["image"], line["strength"], line["width"], line["height"]) == (name, 0.6, 96, 72)
    assert "vae_encoder" in line["timings"]
    metadata = read_png_metadata(tmp_path / line["path"])
    assert (metadata["image"], metadata["strength"]) == (name, "0.6")
    assert _pixels(tmp_path / line["path"]).shape == (72, 96, 3)


def test_width_and_height_resize_the_picture(lcm, tmp_path, start_picture):
    run = lcm("a watercolour", "--image", start_picture(), "--seed", "5", "--out", "o.png")
    assert run.returncode == 0, run.stderr
    assert _pixels(tmp_path / "o.png").shape == (64, 64, 3)


def test_an_image_without_a_prompt_makes_variations_named_after_the_picture(
    lcm, tmp_path, start_picture
):
    run = lcm("--image", start_picture(), "--seed", "8", "--num-images", "2", size=False)
    assert run.returncode == 0, run.stderr
    first, second = (_pixels(tmp_path / f"start-8-{index}.png") for index in (0, 1))
    assert not np.array_equal(first, second)
    assert read_png_metadata(tmp_path / "start-8-0.png")["prompt"] == ""


def test_the_same_seed_and_picture_give_the_same_image(lcm, tmp_path, start_picture):
    name = start_picture("png")
    for out in ("a.png", "b.png"):
        assert lcm("x", "--image", name, "--seed", "3", "--out", out).returncode == 0
    assert np.array_equal(_pixels(tmp_path / "a.png"), _pixels(tmp_path / "b.png"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--strength", "0.5"], "--strength needs --image"),
        (["x", "--image", "absent.png"], "no such picture file: absent.png"),
        (["x", "--image", "prompts.txt"], "prompts.txt is not a PNG, JPEG or WebP picture"),
        (["x", "--image", "dot.png"], "dot.png is 1x1"),
        (["x", "--image", "start.jpg", "--strength", "1.5"], r"strength must be a number in"),
        (["x", "--image", "start.jpg", "--strength", "nan"], r"strength must be a number in"),
        (["x", "--image", "start.jpg", "--strength", "0.1", "--steps", "6"], "at most 5 steps"),
    ],
)
def test_bad_image_to_image_input_is_one_line_exit_2_and_no_file(
    lcm, tmp_path, start_picture, args, message
):
    start_picture()
    (tmp_path / "prompts.txt").write_text("not a picture")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    run = lcm(*args, size=False)
    assert run.returncode == 2
    assert run.stderr.startswith("lcm-lite: error: ")
    assert message in run.stderr
    assert run.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dot.png", "prompts.txt", "start.jpg"]


def test_output_to_a_reader_that_went_away_ends_quietly_with_the_broken_pipe_code(tmp_path):
    """``lcm-lite info x.png | head -1``: the reader has what it wanted; no internal error."""
    save_png(Image.new("RGB", (8, 8)), tmp_path / "x.png", {"prompt": "a fox", "seed": 1})
    reader, writer = os.pipe()
    os.close(reader)  # gone before the child writes a byte: its output meets a broken pipe
    process = subprocess.Popen(
        [sys.executable, "-m", "lcm_lite", "info", str(tmp_path / "x.png")],
        stdout=writer,
        stderr=subprocess.PIPE,
    )
    os.close(writer)
    _, stderr = process.communicate(timeout=60)
    assert (process.returncode, stderr) == (141, b"")
