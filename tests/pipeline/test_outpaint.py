"""Outpainting: the picture on a larger canvas, the new margins painted (the Python API)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lcm_lite.errors import UsageError
from lcm_lite.images.outpaint import extend, outpaint_mask


def varied_picture(width: int, height: int, seed: int = 0) -> Image.Image:
    rows, columns = np.mgrid[0:height, 0:width]
    gradients = np.stack([columns * 255 / width, rows * 255 / height, (rows + columns) % 255], -1)
    noise = np.random.default_rng(seed).integers(0, 60, (height, width, 3))
    return Image.fromarray(np.clip(gradients + noise, 0, 255).astype(np.uint8))


def test_the_canvas_grows_by_the_margins_filled_with_the_edge_and_masked_white():
    picture = varied_picture(10, 8)

    canvas = np.asarray(extend(picture, (3, 2, 1, 0)))
    mask = np.asarray(outpaint_mask(picture, (3, 2, 1, 0)))

    assert canvas.shape == (10, 14, 3) and mask.shape == (10, 14)
    np.testing.assert_array_equal(canvas[2:, 3:13], np.asarray(picture))
    np.testing.assert_array_equal(canvas[2:, 0], np.asarray(picture)[:, 0])  # the edge repeated
    np.testing.assert_array_equal(canvas[0, 3:13], np.asarray(picture)[0])
    assert (mask[2:, 3:13] == 0).all()
    assert (mask[:2] == 255).all() and (mask[:, :3] == 255).all() and (mask[:, 13] == 255).all()


def test_outpainting_is_inpainting_the_extended_canvas_and_the_image_is_the_bigger_picture(
    f32_pipe,
):
    picture = varied_picture(64, 48, seed=1)
    margins = (16, 8, 0, 8)
    arguments = {"strength": 1.0, "steps": 2, "seed": 4, "num_images": 2}

    outpainted = f32_pipe("a harbour", image=picture, outpaint=margins, **arguments)
    inpainted = f32_pipe(
        "a harbour",
        image=extend(picture, margins),
        mask_image=outpaint_mask(picture, margins),
        **arguments,
    )

    assert outpainted[0].size == (80, 64)
    for ours, theirs in zip(outpainted, inpainted, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert outpainted.settings.request.outpaint == margins


def test_the_picture_is_kept_and_the_margins_are_new(previews_pipe):
    picture = varied_picture(48, 48, seed=2)
    last = []

    def keep_last(info):
        if info.step == info.num_steps:
            last.append(info.denoised.copy())

    images = [
        previews_pipe(
            "a harbour",
            image=picture,
            outpaint=(16, 0, 0, 0),  # latent columns 0, 1 are new
            strength=1.0,
            steps=2,
            seed=seed,
            vae="tiny",  # encoded without a draw: the same picture latents for each seed
            callback=keep_last,
        )[0]
        for seed in (1, 2)
    ]
    first, second = last

    np.testing.assert_array_equal(first[..., 2:], second[..., 2:])
    assert np.abs(first[..., :2] - second[..., :2]).mean() > 0.1
    pixels = [np.asarray(image).astype(int) for image in images]
    inside = np.abs(pixels[0][:, 32:] - pixels[1][:, 32:]).mean()
    margin = np.abs(pixels[0][:, :16] - pixels[1][:, :16]).mean()
    assert inside < margin / 4  # the decoder spreads the new margin a little inward


def test_a_mask_of_its_own_repaints_inside_the_picture_too(f32_pipe):
    picture = varied_picture(64, 48, seed=3)
    mask = Image.new("L", (64, 48))
    mask.paste(255, (40, 10, 60, 40))
    arguments = {"strength": 1.0, "steps": 2, "seed": 6}

    both = f32_pipe("x", image=picture, outpaint=(0, 0, 16, 0), mask_image=mask, **arguments)
    margins_only = f32_pipe("x", image=picture, outpaint=(0, 0, 16, 0), **arguments)

    assert both[0].size == (80, 48)
    assert not np.array_equal(np.asarray(both[0]), np.asarray(margins_only[0]))


@pytest.mark.parametrize(
    ("outpaint", "message"),
    [
        ((8, 8, 8), r"outpaint must be 4 integers from 0 to 2048, got \(8, 8, 8\)"),
        ((8, -8, 0, 0), r"outpaint must be 4 integers from 0 to 2048, got \(8, -8, 0, 0\)"),
        ((0, 0, 0, 0), "not all 0"),
        ((2000, 0, 0, 0), "larger than 2048 pixels a side"),
    ],
)
def test_bad_margins_are_one_line_usage_errors(f32_pipe, outpaint, message):
    with pytest.raises(UsageError, match=message) as refused:
        f32_pipe("x", image=varied_picture(64, 48), outpaint=outpaint, steps=2)
    assert "\n" not in str(refused.value)


def test_outpainting_needs_a_picture(f32_pipe):
    with pytest.raises(UsageError, match="outpaint needs image"):
        f32_pipe("x", outpaint=(8, 0, 0, 0))
