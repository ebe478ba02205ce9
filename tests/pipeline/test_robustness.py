"""Every bad input gets one clear line and a documented exit code; nothing is half-written.

Exit codes (docs, "Exit codes"): 0 ok, 2 usage, 3 model problem, 4 device problem,
5 output problem, 130 interrupted (SIGINT), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcm_lite import LCMPipeline
from lcm_lite.errors import LcmLiteError, UsageError
from lcm_lite.request import MAX_IMAGES, MAX_SIZE
from lcm_lite.runtime.compiler import unavailable_devices


def _run(tmp_path, *args, model):
    argv = [sys.executable, "-m", "lcm_lite", *args, "--model", str(model), "--no-cache"]
    return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def _assert_one_line_error(run, code, message):
    assert run.returncode == code, run.stderr
    assert run.stderr.startswith("lcm-lite: error: "), run.stderr
    assert run.stderr.count("\n") == 1, run.stderr
    assert message in run.stderr


@pytest.fixture
def broken_copy(tiny_ov_dir, tmp_path):
    """A copy of the tiny model for one test to damage."""
    copy = tmp_path / "model"
    shutil.copytree(tiny_ov_dir, copy)
    return copy


def _truncate(path, size):
    with open(path, "r+b") as file:
        file.truncate(size)


def _plain_sd_unet(path):
    """An IR with a UNet's inputs but no ``timestep_cond``, as a plain Stable Diffusion UNet."""
    sample = ov.opset13.parameter([-1, 4, -1, -1], ov.Type.f32, name="sample")
    timestep = ov.opset13.parameter([-1], ov.Type.i64, name="timestep")
    text = ov.opset13.parameter([-1, 77, 32], ov.Type.f32, name="encoder_hidden_states")
    output = ov.opset13.multiply(sample, ov.opset13.constant(np.float32(1.0)))
    ov.save_model(ov.Model([output], [sample, timestep, text], "unet"), path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m: shutil.rmtree(m), "model folder not found"),
        (
            lambda m: os.remove(m / "unet" / "openvino_model.bin"),
            "unet/openvino_model.bin is missing",
        ),
        (
            lambda m: os.remove(m / "vae_decoder" / "config.json"),
            "vae_decoder/config.json is missing",
        ),
        (
            lambda m: os.remove(m / "scheduler" / "scheduler_config.json"),
            "scheduler/scheduler_config.json is missing",
        ),
        (
            lambda m: [os.remove(m / "tokenizer" / f) for f in ("tokenizer.json", "merges.txt")],
            "merges.txt",
        ),
        (lambda m: _truncate(m / "unet" / "openvino_model.bin", 1000), "the IR is corrupt"),
        (lambda m: _truncate(m / "text_encoder" / "openvino_model.xml", 3000), "the IR is corrupt"),
        (lambda m: (m / "scheduler" / "scheduler_config.json").write_text("{"), "scheduler_config"),
        (
            lambda m: (m / "unet" / "config.json").write_text(json.dumps({"in_channels": 4})),
            "it has no time_cond_proj_dim, the IR takes timestep_cond",
        ),
        (lambda m: _plain_sd_unet(m / "unet" / "openvino_model.xml"), "no timestep_cond input"),
        (
            lambda m: (m / "unet" / "config.json").write_text(
                json.dumps(
                    {
                        **json.loads((m / "unet" / "config.json").read_text()),
                        "time_cond_proj_dim": 64,
                    }
                )
            ),
            "does not match",
        ),
        (
            lambda m: (m / "vae_decoder" / "openvino_model.xml").write_text(
                (m / "vae_decoder" / "openvino_model.xml")
                .read_text()
                .replace('version="11"', 'version="99"', 1)
            ),
            "IR version 99",
        ),
    ],
)
def test_a_broken_model_is_named_with_exit_code_3_and_no_image(
    broken_copy, tmp_path, damage, message
):
    damage(broken_copy)
    run = _run(
        tmp_path,
        "a red cube",
        "--width",
        "64",
        "--height",
        "64",
        "--out",
        "o.png",
        model=broken_copy,
    )
    _assert_one_line_error(run, 3, message)
    assert not (tmp_path / "o.png").exists()


CPU_NAME = ov.Core().get_property("CPU", "FULL_DEVICE_NAME")


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("NPU", f"device 'NPU' is not available; OpenVINO sees: CPU ({CPU_NAME})"),
        ("GPU.1", "device 'GPU.1' is not available"),
        ("HETERO:NOSUCH,CPU", "device 'NOSUCH' (in 'HETERO:NOSUCH,CPU') is not available"),
        ("BATCH:CPU(0)", "compiling the text encoder for BATCH:CPU(0) failed"),
    ],
)
def test_an_unknown_or_failing_device_is_exit_code_4(tiny_ov_dir, tmp_path, device, message):
    run = _run(
        tmp_path, "x", "--width", "64", "--height", "64", "--device", device, model=tiny_ov_dir
    )
    _assert_one_line_error(run, 4, message)


TWO_GPUS = ["CPU", "GPU.0", "GPU.1"]  # what OpenVINO lists with an integrated and a discrete GPU


@pytest.mark.parametrize(
    "device",
    [
        "GPU.1",
        "GPU.0",
        "GPU",
        "CPU",
        "AUTO",
        "AUTO:GPU.1,CPU",
        "AUTO:-CPU",
        "HETERO:GPU.1,CPU",
        "MULTI:GPU.0,GPU.1",
        "BATCH:GPU(4)",
    ],
)
def test_every_device_name_openvino_accepts_is_accepted(device):
    assert unavailable_devices(device, TWO_GPUS) == []


@pytest.mark.parametrize(
    ("device", "missing"),
    [("GPU.2", ["GPU.2"]), ("NPU", ["NPU"]), ("AUTO:NPU,GPU.1", ["NPU"]), ("CPU.1", ["CPU.1"])],
)
def test_devices_openvino_does_not_list_are_named(device, missing):
    assert unavailable_devices(device, TWO_GPUS) == missing


def test_a_virtual_device_over_the_cpu_gives_the_cpus_image(tiny_ov_dir, f32_pipe):
    pipe = LCMPipeline.from_pretrained(tiny_ov_dir, device="HETERO:CPU", precision="f32")
    image = pipe("a red cube", steps=1, width=64, height=64, seed=2)[0]
    reference = f32_pipe("a red cube", steps=1, width=64, height=64, seed=2)[0]
    assert np.abs(np.asarray(image, int) - np.asarray(reference, int)).max() <= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--width", "0"], "width must be from 8"),
        (["--width", "-64"], "width must be from 8"),
        (["--height", str(MAX_SIZE + 8)], f"height must be from 8 to {MAX_SIZE}"),
        (["--steps", "51"], "original_inference_steps"),
        (["--guidance", "nan"], "guidance_scale must be a finite number"),
        (["--guidance", "inf"], "guidance_scale must be a finite number"),
        (["--guidance", "-1"], "guidance_scale must be a finite number >= 0"),
        (["--seed", str(2**64)], "seed must be an integer from 0 to 2**64-1"),
        (["--num-images", "0"], "num_images must be from 1"),
        (["--num-images", str(MAX_IMAGES + 1)], f"num_images must be from 1 to {MAX_IMAGES}"),
        (["--guidance", "high"], "expected a number"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(tiny_ov_dir, tmp_path, args, message):
    run = _run(tmp_path, "x", *args, model=tiny_ov_dir)
    _assert_one_line_error(run, 2, message)
    assert not list(tmp_path.iterdir())


def test_a_prompt_of_undecodable_bytes_is_a_usage_error(tiny_ov_dir, tmp_path):
    argv = [
        sys.executable.encode(),
        b"-m",
        b"lcm_lite",
        b"caf\xe9 \xff",
        b"--model",
        bytes(tiny_ov_dir),
        b"--width",
        b"64",
        b"--height",
        b"64",
    ]
    run = subprocess.run(argv, cwd=tmp_path, capture_output=True, timeout=300)
    _assert_one_line_error(
        subprocess.CompletedProcess(
            run.args, run.returncode, run.stdout.decode(), run.stderr.decode()
        ),
        2,
        "not valid UTF-8",
    )


@pytest.mark.parametrize("prompt", ["", "   \t  ", "ünïcödé ✨ 独角兽"])
def test_empty_whitespace_and_unicode_prompts_generate_as_in_diffusers(f32_pipe, prompt):
    assert f32_pipe(prompt, steps=1, width=64, height=64, seed=0)[0].size == (64, 64)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a\x00b", "NUL"),
        (["fine", 3], "prompts must be strings"),
        ([], "at least one prompt"),
    ],
)
def test_bad_prompts_are_usage_errors(f32_pipe, prompt, message):
    with pytest.raises(UsageError, match=message):
        f32_pipe(prompt, steps=1, width=64, height=64)


def test_a_full_disk_is_exit_code_5_and_leaves_no_partial_file(tiny_ov_dir, tmp_path, tmpfs):
    full = tmpfs("full", "size=4k")
    (full / "filler").write_bytes(b"\0" * 3000)
    run = _run(
        tmp_path,
        "x",
        "--width",
        "128",
        "--height",
        "128",
        "--out",
        str(full),
        model=tiny_ov_dir,
    )
    _assert_one_line_error(run, 5, "No space left on device")
    assert sorted(p.name for p in full.iterdir()) == ["filler"]


def test_a_read_only_folder_is_exit_code_5(tiny_ov_dir, tmp_path, tmpfs):
    read_only = tmpfs("ro", "ro,size=64k")
    run = _run(
        tmp_path,
        "x",
        "--width",
        "64",
        "--height",
        "64",
        "--out",
        str(read_only / "o.png"),
        model=tiny_ov_dir,
    )
    _assert_one_line_error(run, 5, "Read-only file system")
    assert not list(read_only.iterdir())


def test_an_output_folder_that_is_a_file_is_exit_code_5(tiny_ov_dir, tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    run = _run(
        tmp_path, "x", "--width", "64", "--height", "64", "--out", "taken/sub", model=tiny_ov_dir
    )
    _assert_one_line_error(run, 5, "cannot create taken/sub")


_anything = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**65), 2**65),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    prompt=st.one_of(st.text(max_size=40), st.lists(st.text(max_size=10), max_size=2), _anything),
    steps=st.one_of(st.integers(-1, 9), _anything),
    guidance=st.one_of(st.floats(-2, 20), _anything),
    width=st.one_of(st.sampled_from([64, 72, 96]), st.integers(-16, 200), _anything),
    height=st.one_of(st.sampled_from([64, 80]), st.integers(-16, 200), _anything),
    num_images=st.one_of(st.integers(-1, 2), _anything),
    seed=st.one_of(st.none(), st.integers(-5, 2**64 + 5), _anything),
)
def test_any_parameters_either_generate_or_raise_a_documented_error(
    f32_pipe, prompt, steps, guidance, width, height, num_images, seed
):
    try:
        result = f32_pipe(
            prompt,
            steps=steps,
            guidance_scale=guidance,
            width=width,
            height=height,
            num_images=num_images,
            seed=seed,
        )
    except LcmLiteError as error:
        assert isinstance(error, UsageError)
        assert str(error) and "\n" not in str(error)
        return
    prompts = [prompt] if isinstance(prompt, str) else prompt
    assert len(result) == len(prompts) * num_images
    assert all(image.size == (width, height) for image in result)
    assert math.isfinite(guidance) and 0 <= result.seed < 2**64


def test_numpy_numbers_are_accepted_as_python_numbers_are(f32_pipe):
    python = f32_pipe("a red cube", steps=2, guidance_scale=6.5, width=64, height=72, seed=4)
    numpy = f32_pipe(
        "a red cube",
        steps=np.int64(2),
        guidance_scale=np.float32(6.5),
        width=np.int32(64),
        height=np.uint16(72),
        num_images=np.int8(1),
        seed=np.uint64(4),
    )
    assert np.array_equal(np.asarray(numpy[0]), np.asarray(python[0]))
    assert numpy.metadata(0, "m") == python.metadata(0, "m")


@pytest.mark.parametrize(
    ("name", "value"),
    [("width", True), ("steps", np.float64(2.0)), ("guidance_scale", False), ("num_images", 1.0)],
)
def test_bools_and_non_integers_are_still_refused(f32_pipe, name, value):
    kwargs = {"steps": 1, "width": 64, "height": 64, name: value}
    with pytest.raises(UsageError, match=name):
        f32_pipe("x", **kwargs)


def test_the_tmpfs_fixture_fails_in_ci_as_root_when_mounting_fails(tmp_path):
    """CI runs as root: a tmpfs test that cannot mount must fail there, not skip silently."""
    (tmp_path / "test_mount.py").write_text(
        "def test_mount(tmpfs):\n    tmpfs('bad', 'size=not-a-size')\n"
    )
    conftest_dir = Path(__file__).resolve().parents[1]  # tests/, where conftest.py is

    def outcome(ci: str) -> str:
        path = os.pathsep.join([str(conftest_dir), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "CI": ci, "PYTHONPATH": path}
        argv = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "conftest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rfs",
            str(tmp_path / "test_mount.py"),
        ]
        run = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        return run.stdout

    if os.geteuid() == 0:
        assert "1 failed" in outcome("true")
        assert "CI runs as root, yet mounting a tmpfs failed" in outcome("true")
    assert "1 skipped" in outcome("")
