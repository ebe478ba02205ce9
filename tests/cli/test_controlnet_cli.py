"""``python -m lcm_lite --controlnet DIR[:SCALE] --control-image FILE``: a real process on the tiny
model and its random ControlNets; the metadata remakes the image; bad input is one line, exit 2."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lcm_lite.images.png import read_png_metadata

pytest.importorskip("diffusers")
pytestmark = pytest.mark.slow


@pytest.fixture
def lcm(tiny_ov_dir, tiny_controlnet, second_tiny_controlnet, tmp_path):
    """Run ``python -m lcm_lite ARGS`` in ``tmp_path``, with ``edges.png`` and ``depth.png``
    there; ``cn1`` and ``cn2`` in ARGS stand for the two ControlNet folders."""
    rng = np.random.default_rng(0)
    for name in ("edges.png", "depth.png"):
        Image.fromarray(rng.integers(0, 256, (56, 72, 3), dtype=np.uint8)).save(tmp_path / name)
    folders = {"cn1": str(tiny_controlnet[1]), "cn2": str(second_tiny_controlnet[1])}

    def run(*args):
        words = [_folder_named(word, folders) for word in args]
        argv = [sys.executable, "-m", "lcm_lite", *words, "--model", str(tiny_ov_dir), "--no-cache"]
        return subprocess.run(
            argv, cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=300
        )

    return run


def _folder_named(word: str, folders: dict[str, str]) -> str:
    """``cn1:0.7`` -> ``<folder of cn1>:0.7``; other words as they are."""
    name, colon, scale = word.partition(":")
    return folders[name] + colon + scale if name in folders else word


def _pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_two_controlnets_make_an_image_that_info_remakes_and_save_the_control_pictures(
    lcm, tmp_path
):
    first = lcm(
        "a fox", "--controlnet", "cn1:0.7", "--controlnet", "cn2",
        "--control-image", "edges.png", "--control-image", "depth.png",
        "--control-preprocess", "canny", "--control-end", "0.75", "--save-control",
        "--steps", "2", "--seed", "5", "--out", "first.png",
    )  # fmt: skip

    assert first.returncode == 0, first.stderr
    assert _pixels(tmp_path / "first.png").shape == (56, 72, 3)  # the control pictures' size
    for name in ("first-control.png", "first-control-2.png"):
        assert set(np.unique(_pixels(tmp_path / name))) <= {0, 255}  # Canny's edge maps
    metadata = read_png_metadata(tmp_path / "first.png")
    assert metadata["control_image"] == "edges.png, depth.png"
    assert metadata["controlnet_conditioning_scale"] == "0.7,1.0"
    info = subprocess.run(
        [sys.executable, "-m", "lcm_lite", "info", "first.png"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    argv = shlex.split(info.stdout.splitlines()[-1].removeprefix("remake: "))
    again = lcm(*argv[2:], "--out", "again.png")
    assert again.returncode == 0, again.stderr
    assert np.array_equal(_pixels(tmp_path / "first.png"), _pixels(tmp_path / "again.png"))
    without = lcm("a fox", "--steps", "2", "--seed", "5", "--width", "72", "--height", "56",
                  "--out", "without.png")  # fmt: skip
    assert without.returncode == 0, without.stderr
    assert not np.array_equal(_pixels(tmp_path / "first.png"), _pixels(tmp_path / "without.png"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--controlnet", "cn1", "--control-image", "edges.png", "--control-image", "depth.png"],
         "--control-image given 2 time(s) for 1 --controlnet"),
        (["--control-image", "edges.png"], "--control-image given 1 time(s) for 0 --controlnet"),
        (["--controlnet", "cn1"], "the ControlNets need a control picture"),
        (["--controlnet", "cn1", "--control-image", "nothing.png"], "no such picture file"),
        (["--controlnet", "cn1", "--control-image", "edges.png", "--control-scale", "-1"],
         r"controlnet_conditioning_scale must be a number in [0, 5]"),
        (["--controlnet", "cn1", "--control-image", "edges.png", "--control-start", "0.9",
          "--control-end", "0.1"], "must be below control_guidance_end"),
        (["--control-start", "0.5"], "--control-start needs --control-image"),
    ],
)  # fmt: skip
def test_bad_controlnet_options_are_one_line_and_exit_2(lcm, args, message):
    run = lcm("a fox", "--steps", "1", *args)

    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
