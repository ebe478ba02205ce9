"""A device per stage: ``--device unet=AUTO:CPU``, ``from_pretrained(device={...})``.

Only the CPU is here, so the maps use it directly and through OpenVINO's virtual devices over it
(``AUTO:CPU``, ``HETERO:CPU``); each network is checked to be compiled for the device of its stage
by what OpenVINO says of the compiled model. NPU and GPU are absent here: they are the errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import numpy as np
import openvino as ov
import pytest
from PIL import Image

from lcm_lite import DeviceError, LCMPipeline, UsageError
from lcm_lite.fields import STAGES, Devices, as_text, device_map
from lcm_lite.models.folder import ModelFolder
from lcm_lite.models.lora_branches import Branches
from lcm_lite.pipeline.compiled import CompiledNetworks, Shapes
from lcm_lite.runtime.compiler import Compiler, StageCompilers

MIXED = {
    "text_encoder": "AUTO:CPU",
    "unet": "HETERO:CPU",
    "vae_decoder": "CPU",
    "vae_encoder": "AUTO:CPU",
}
SWAPPED = {
    "text_encoder": "HETERO:CPU",
    "unet": "AUTO:CPU",
    "vae_decoder": "HETERO:CPU",
    "vae_encoder": "HETERO:CPU",
}


def _picture() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _images(pipe: LCMPipeline) -> list[np.ndarray]:
    """Text to image and image to image (every stage runs), as integer pixels."""
    text = pipe("a red cube", steps=2, width=64, height=64, seed=3)[0]
    picture = pipe("a red cube", image=_picture(), strength=0.6, steps=2, seed=3)[0]
    return [np.asarray(image).astype(int) for image in (text, picture)]


# -- the map: its text form, its defaults, its refusals --------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CPU", dict.fromkeys(STAGES, "CPU")),
        ("AUTO:GPU,CPU", dict.fromkeys(STAGES, "AUTO:GPU,CPU")),  # commas of one device
        ("unet=GPU", {**dict.fromkeys(STAGES, "CPU"), "unet": "GPU"}),  # the rest on CPU
        (
            "text_encoder=NPU,unet=AUTO:GPU,CPU,vae_decoder=HETERO:GPU.1,CPU",
            {
                "text_encoder": "NPU",
                "unet": "AUTO:GPU,CPU",
                "vae_decoder": "HETERO:GPU.1,CPU",
                "vae_encoder": "CPU",
            },
        ),
    ],
)
def test_a_device_map_is_read_from_text_and_written_back(text, expected):
    devices = device_map(text)
    assert devices.as_dict() == expected
    assert device_map(devices.text) == devices
    assert as_text("devices", devices) == devices.text
    assert Devices.of(expected) == devices


def test_one_device_for_every_stage_is_written_as_that_device():
    assert Devices.of("CPU").text == "CPU"
    assert Devices.of({"unet": "CPU"}).text == "CPU"
    assert Devices.of({"unet": "GPU"}).text == (
        "text_encoder=CPU,unet=GPU,vae_decoder=CPU,vae_encoder=CPU"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("bogus=CPU", "no stage 'bogus' to put on a device; the stages are text_encoder, unet,"),
        ({"vae": "CPU"}, "no stage 'vae' to put on a device"),
        ("unet=", "no device given for unet"),
        ({"unet": 1}, "no device given for unet"),
        ("unet=CPU,unet=GPU", "unet is given a device twice"),
        ("AUTO:GPU,unet=CPU", "expected a device or STAGE=DEVICE pairs"),
        (["CPU"], "device must be a device name or a {stage: device} mapping"),
    ],
)
def test_a_bad_map_is_a_usage_error(value, message):
    with pytest.raises(UsageError, match="^" + message.replace("{", r"\{").replace("}", r"\}")):
        Devices.of(value)


# -- the pipeline ----------------------------------------------------------------------------------


@pytest.mark.parametrize("devices", [MIXED, SWAPPED, "unet=AUTO:CPU"], ids=str)
def test_a_device_per_stage_gives_the_all_cpu_images(f32_pipe, tiny_ov_dir, devices):
    """Measured: pixel-equal (CPU, AUTO:CPU and HETERO:CPU run the same CPU kernels at f32)."""
    pipe = LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32", device=devices)
    for got, expected in zip(_images(pipe), _images(f32_pipe), strict=True):
        assert np.array_equal(got, expected)


def _openvino_device(compiled: ov.CompiledModel) -> str:
    """The device a compiled model is for, as OpenVINO describes it: HETERO's compiled models
    count their submodels (``HETERO_NUMBER_OF_SUBMODELS``), AUTO's list their candidates
    (``MULTI_DEVICE_PRIORITIES``, which HETERO's have too), every one its
    ``EXECUTION_DEVICES``."""
    supported = compiled.get_property("SUPPORTED_PROPERTIES")
    executing = ",".join(compiled.get_property("EXECUTION_DEVICES"))
    if "HETERO_NUMBER_OF_SUBMODELS" in supported:
        return "HETERO:" + executing
    if "MULTI_DEVICE_PRIORITIES" in supported:
        return "AUTO:" + compiled.get_property("MULTI_DEVICE_PRIORITIES")
    return executing


def _cpu_precision(compiled: ov.CompiledModel) -> str:
    """The CPU's inference precision in ``compiled``, itself or under a virtual device."""
    if "DEVICE_PROPERTIES" in compiled.get_property("SUPPORTED_PROPERTIES"):
        hint = compiled.get_property("DEVICE_PROPERTIES")["CPU"]["INFERENCE_PRECISION_HINT"]
    else:
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    return hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)


@pytest.mark.parametrize("devices", [MIXED, SWAPPED], ids=str)
def test_each_network_is_compiled_for_its_stage_device_with_the_hint(tiny_ov_dir, devices):
    pipe = LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32", device=devices)
    networks = CompiledNetworks(
        Shapes(1, (1, 4, 8, 8), guided=False), pipe.compiler, pipe.folder, Branches(), 77, False
    )
    compiled = {
        "text_encoder": networks.text_encoder().compiled,
        "unet": networks.unet().compiled,
        "vae_decoder": networks.decoder(pipe.vae).compiled,
        "vae_encoder": networks.encoder(pipe.vae).compiled,
    }
    assert {stage: _openvino_device(c) for stage, c in compiled.items()} == devices
    assert {stage: _cpu_precision(c) for stage, c in compiled.items()} == dict.fromkeys(
        STAGES, "f32"
    )
    # one compiler per device, all on one OpenVINO Core
    assert sorted(pipe.compiler.compilers) == sorted(set(devices.values()))
    assert len({id(c.core) for c in pipe.compiler.compilers.values()}) == 1


def test_a_tiny_vae_runs_where_the_vae_decoder_does(tiny_ov_dir, tiny_taesd_ov_dir):
    pipe = LCMPipeline.from_pretrained(
        tiny_ov_dir, precision="f32", tiny_vae=tiny_taesd_ov_dir, device={"vae_decoder": "AUTO:CPU"}
    )
    networks = CompiledNetworks(
        Shapes(1, (1, 4, 8, 8), guided=False), pipe.compiler, pipe.folder, Branches(), 77, False
    )
    assert _openvino_device(networks.decoder(pipe.tiny_vae).compiled) == "AUTO:CPU"


def test_each_device_keeps_its_own_compiled_blobs(tiny_ov_dir, tmp_path):
    """The blob's name digests the device: the UNet on HETERO:CPU and on CPU are two blobs, the
    text encoder on CPU in both pipelines one."""
    for devices in ({"unet": "HETERO:CPU"}, "CPU"):
        pipe = LCMPipeline.from_pretrained(
            tiny_ov_dir, precision="f32", device=devices, cache_dir=tmp_path
        )
        pipe("a red cube", steps=1, width=64, height=64, seed=1)
    assert len(list(tmp_path.glob("unet-*.blob"))) == 2
    assert len(list(tmp_path.glob("text_encoder-*.blob"))) == 1


def test_a_stage_map_in_python(tiny_ov_dir, f32_pipe):
    pipe = LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32", device={"unet": "CPU"})
    assert pipe.compiler.device == "CPU"  # the text form: what /api/info shows, a string
    assert _images(pipe)[0].tolist() == _images(f32_pipe)[0].tolist()
    pipe = LCMPipeline.from_pretrained(tiny_ov_dir, device={"unet": "AUTO:CPU"})
    assert pipe.compiler.device == "text_encoder=CPU,unet=AUTO:CPU,vae_decoder=CPU,vae_encoder=CPU"
    assert pipe.compiler.for_stage("unet").device == "AUTO:CPU"
    assert pipe.compiler.for_stage("vae_decoder").device == "CPU"


def test_one_device_is_one_compiler_as_before(tiny_ov_dir, f32_pipe):
    assert f32_pipe.compiler.device == "CPU"
    assert list(f32_pipe.compiler.compilers) == ["CPU"]
    assert {f32_pipe.compiler.for_stage(stage).device for stage in STAGES} == {"CPU"}
    # an LCMPipeline made with a single Compiler runs every stage on it
    pipe = LCMPipeline(ModelFolder.open(tiny_ov_dir), Compiler(precision="f32"))
    assert pipe.compiler.device == "CPU"
    assert _images(pipe)[0].tolist() == _images(f32_pipe)[0].tolist()


@pytest.mark.parametrize(
    ("devices", "error", "message"),
    [
        ({"bogus": "CPU"}, UsageError, "no stage 'bogus' to put on a device"),
        ("NPU", DeviceError, "device 'NPU' is not available; OpenVINO sees: CPU ("),
        ("AUTO:NPU", DeviceError, "device 'NPU' (in 'AUTO:NPU') is not available"),
        ({"unet": "NPU"}, DeviceError, "device 'NPU' (for unet) is not available; OpenVINO sees"),
        (
            {"text_encoder": "GPU", "unet": "NPU", "vae_decoder": "GPU"},
            DeviceError,
            "device 'GPU' (for text_encoder, vae_decoder) is not available",
        ),
        (
            {"unet": "AUTO:NPU,CPU"},
            DeviceError,
            "device 'NPU' (in 'AUTO:NPU,CPU', for unet) is not available",
        ),
    ],
)
def test_an_unknown_stage_or_an_absent_device_is_refused_at_load(
    tiny_ov_dir, devices, error, message
):
    with pytest.raises(error) as raised:
        LCMPipeline.from_pretrained(tiny_ov_dir, device=devices)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_an_absent_device_is_refused_before_anything_compiles(tmp_path):
    with pytest.raises(DeviceError, match=r"^device 'NPU' \(for unet\)"):
        StageCompilers.open({"unet": "NPU"}, "f32", tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- the command line ------------------------------------------------------------------------------


@pytest.fixture
def lcm(tiny_ov_dir, tmp_path):
    """``python -m lcm_lite ARGS --model TINY`` in ``tmp_path``, with its own compiled cache."""

    def run(*args: str) -> subprocess.CompletedProcess:
        environment = {**os.environ, "LCM_LITE_CACHE": str(tmp_path / "cache")}
        return subprocess.run(
            [sys.executable, "-m", "lcm_lite", *args, "--model", str(tiny_ov_dir)],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )

    return run


def test_the_command_line_takes_a_device_per_stage(lcm, tmp_path):
    size = ["--width", "64", "--height", "64", "--seed", "1", "--precision", "f32"]
    run = lcm("a red cube", *size, "--device", "unet=AUTO:CPU,vae_decoder=HETERO:CPU")
    assert run.returncode == 0, run.stderr
    all_cpu = lcm("a red cube", *size, "--out", "cpu.png")
    assert all_cpu.returncode == 0, all_cpu.stderr
    with (
        Image.open(tmp_path / "a-red-cube-1.png") as mixed,
        Image.open(tmp_path / "cpu.png") as cpu,
    ):
        assert np.array_equal(np.asarray(mixed), np.asarray(cpu))


def test_info_shows_each_stage_device(lcm):
    run = lcm("info", "--device", "unet=AUTO:CPU,vae_decoder=NPU")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    for stage, device in [
        ("text_encoder", "on CPU"),
        ("unet", "on AUTO:CPU"),
        ("vae_decoder", "on NPU (not available here)"),
        ("vae_encoder", "on CPU"),
    ]:
        assert any(line.startswith(f"{stage}: ") and line.endswith(device) for line in lines)
    plain = lcm("info").stdout.splitlines()
    assert any(line.startswith("unet: ") and line.endswith(" MB, on CPU") for line in plain)


@pytest.mark.parametrize(
    ("device", "code", "message"),
    [
        ("bogus=CPU", 2, "argument --device: no stage 'bogus' to put on a device"),
        ("unet=GPU,unet=CPU", 2, "argument --device: unet is given a device twice"),
        ("unet=NPU", 4, "device 'NPU' (for unet) is not available; OpenVINO sees: CPU ("),
        ("text_encoder=CPU,unet=GPU", 4, "device 'GPU' (for unet) is not available"),
    ],
)
def test_a_bad_device_map_is_one_line_an_exit_code_and_no_file(
    lcm, tmp_path, device, code, message
):
    run = lcm("a red cube", "--device", device)
    assert run.returncode == code
    assert run.stderr.startswith("lcm-lite: error: ")
    assert message in run.stderr
    assert run.stderr.count("\n") == 1
    assert not list(tmp_path.glob("*.png"))


def test_the_servers_info_shows_the_map_as_text(tiny_ov_dir):
    """``/api/info``'s ``device`` stays a string: the map's text form."""
    pytest.importorskip("uvicorn")
    from lcm_lite.server.running import Server

    pipe = LCMPipeline.from_pretrained(tiny_ov_dir, device={"unet": "AUTO:CPU"})
    with (
        Server(pipe, port=0, model="tiny") as server,
        urllib.request.urlopen(server.url + "api/info", timeout=30) as reply,
    ):
        info = json.load(reply)
    assert info["device"] == "text_encoder=CPU,unet=AUTO:CPU,vae_decoder=CPU,vae_encoder=CPU"
