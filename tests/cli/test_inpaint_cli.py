"""``--image PICTURE --mask MASK`` as a user runs it: inpainting on the tiny converted model.

The fixtures ``lcm`` (run the CLI) and ``start_picture`` are test_cli's, imported as fixtures.
"""
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import shlex

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_cli import _pixels, compiled_cache, lcm, start_picture  # noqa: F401 (fixtures)

from lcm_lite.images.png import read_png_metadata


@pytest.fixture
def mask_file(tmp_path):
    """Write a 100x75 mask (the start picture's shape), white in a rectangle, as ``mask.png``."""

    def write(size: tuple[int, int] = (100, 75), box=(20, 10, 70, 50), name="mask.png") -> str:
        mask = Image.new("L", size)
        if box is not None:
            ImageDraw.Draw(mask).rectangle(box, fill=255)
        mask.save(tmp_path / name)
        return name

    return write


def test_a_mask_repaints_the_picture_and_the_metadata_remakes_it(
    lcm, tmp_path, start_picture, mask_file
):
    picture, mask = start_picture("png"), mask_file()
    options = ["--image", picture, "--mask", mask, "--strength", "1", "--steps", "2"]
    run = lcm("a red door", *options, "--seed", "4", "--out", "first.png", size=False)
    assert run.returncode == 0, run.stderr
    plain = lcm(
        "a red door", *options[:2], *options[4:], "--seed", "4", "--out", "plain.png", size=False
    )
    assert plain.returncode == 0, plain.stderr

    metadata = read_png_metadata(tmp_path / "first.png")
    digest = hashlib.sha256((tmp_path / mask).read_bytes()).hexdigest()[:16]
    assert (metadata["mask"], metadata["mask_sha256"]) == ("mask.png", digest)
    assert not np.array_equal(_pixels(tmp_path / "first.png"), _pixels(tmp_path / "plain.png"))
    info = lcm("info", "first.png", model=False, size=False)
    assert info.returncode == 0, info.stderr
    assert f"mask_sha256: {digest}" in info.stdout.splitlines()
    argv = shlex.split(info.stdout.splitlines()[-1].removeprefix("remake: "))
    assert "--mask=mask.png" in argv
    again = lcm("generate", "--out", "again.png", *argv[2:], model=False, size=False)
    assert again.returncode == 0, again.stderr
    assert np.array_equal(_pixels(tmp_path / "first.png"), _pixels(tmp_path / "again.png"))
    assert read_png_metadata(tmp_path / "again.png") == metadata


def test_outpaint_makes_the_bigger_picture_and_the_metadata_remakes_it(
    lcm, tmp_path, start_picture
):
    picture = start_picture("png")  # 100x75: 96x72 with the margins, rounded down
    options = ["--image", picture, "--outpaint", "8,0,0,5", "--strength", "1", "--steps", "2"]
    run = lcm("a harbour", *options, "--seed", "2", "--out", "wide.png", size=False)
    assert run.returncode == 0, run.stderr

    assert _pixels(tmp_path / "wide.png").shape == (80, 104, 3)
    metadata = read_png_metadata(tmp_path / "wide.png")
    assert metadata["outpaint"] == "8,0,0,5"
    info = lcm("info", "wide.png", model=False, size=False)
    argv = shlex.split(info.stdout.splitlines()[-1].removeprefix("remake: "))
    again = lcm("generate", "--out", "again.png", *argv[2:], model=False, size=False)
    assert again.returncode == 0, again.stderr
    assert np.array_equal(_pixels(tmp_path / "wide.png"), _pixels(tmp_path / "again.png"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--mask", "mask.png"], "--mask needs --image"),
        (["x", "--image", "start.jpg", "--mask", "absent.png"], "no such picture file"),
        (["x", "--image", "start.jpg", "--mask", "notes.txt"], "notes.txt is not a PNG"),
        (["x", "--image", "start.jpg", "--mask", "square.png"], "the mask is 64x64"),
        (["x", "--image", "start.jpg", "--mask", "black.png"], "the mask is empty"),
        (
            [
                "x",
                "--image",
                "start.jpg",
                "--mask",
                "mask.png",
                "--steps",
                "2",
                "--strength",
                "0.3",
            ],
            "inpainting runs int(steps x strength) steps",
        ),
        (["x", "--outpaint", "8,0,0,0"], "--outpaint needs --image"),
        (["x", "--image", "start.jpg", "--outpaint", "8,0"], "outpaint must be 4 integers"),
        (["x", "--image", "start.jpg", "--outpaint", "8,0,-1,0"], "from 0 to 2048, got"),
        (["x", "--image", "start.jpg", "--mask-blur", "4"], "--mask-blur needs --mask"),
    ],
)
def test_bad_inpainting_input_is_one_line_exit_2_and_no_file(
    lcm, tmp_path, start_picture, mask_file, args, message
):
    start_picture()
    mask_file()
    mask_file(size=(64, 64), name="square.png")
    mask_file(box=None, name="black.png")
    (tmp_path / "notes.txt").write_text("not a picture")
    before = sorted(path.name for path in tmp_path.iterdir())
    run = lcm(*args, size=False)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("lcm-lite: error: ")
    assert message in run.stderr
    assert run.stderr.count("\n") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == before
