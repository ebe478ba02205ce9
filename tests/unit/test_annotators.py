"""Control pictures from photos (``images.annotators``): Canny's edges where the picture has
them, thin, white on black, as many as the thresholds let through; gray and inverted pictures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lcm_lite.errors import UsageError
from lcm_lite.fields import specs
from lcm_lite.images.annotators import ANNOTATORS, annotate, canny
from lcm_lite.request import Request


def _square(fill=(200, 180, 20), background=(30, 30, 30)) -> Image.Image:
    picture = Image.new("RGB", (96, 80), background)
    ImageDraw.Draw(picture).rectangle((30, 20, 69, 59), fill=fill)
    return picture


def test_canny_draws_thin_white_edges_on_black_along_the_outline_only():
    edges = np.asarray(canny(_square()))

    assert edges.shape == (80, 96, 3)
    assert set(np.unique(edges)) == {0, 255}
    mask = edges[:, :, 0] == 255
    assert (edges[:, :, 0] == edges[:, :, 2]).all()
    assert mask[40, 28:32].any() and mask[40, 68:72].any()  # left and right sides
    assert mask[18:22, 50].any() and mask[58:62, 50].any()  # top and bottom sides
    assert not mask[35:45, 40:60].any() and not mask[:10].any()  # flat inside and outside
    assert mask[40, 20:40].sum() <= 2  # thin: non-maximum suppression


def test_a_strong_colour_edge_counts_though_its_gray_levels_barely_differ():
    """As OpenCV on RGB: each pixel takes its strongest channel's gradient."""
    picture = _square(fill=(30, 30, 200), background=(60, 30, 10))

    assert np.asarray(canny(picture)).any()


def test_higher_thresholds_keep_fewer_edges():
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    picture = Image.fromarray(noise)

    counts = [np.asarray(canny(picture, low, 2 * low)).sum() for low in (20, 100, 400)]

    assert counts[0] > counts[1] > counts[2]


def test_hysteresis_keeps_a_weak_edge_connected_to_a_strong_one():
    picture = Image.new("RGB", (64, 64), (0, 0, 0))
    draw = ImageDraw.Draw(picture)
    draw.rectangle((0, 0, 31, 63), fill=(255, 255, 255))  # a strong edge at x = 32
    draw.rectangle((32, 32, 63, 63), fill=(60, 60, 60))  # continued weakly below
    alone = Image.new("RGB", (64, 64), (0, 0, 0))
    ImageDraw.Draw(alone).rectangle((0, 32, 31, 63), fill=(60, 60, 60))

    high = 600  # above the weak edge's gradient, below the strong one's
    assert np.asarray(canny(picture, 100, high))[48:60, 30:35].any()
    assert not np.asarray(canny(alone, 100, high)).any()


def test_gray_and_invert_keep_the_size_and_give_rgb():
    picture = _square()

    gray = np.asarray(annotate(picture, "gray"))
    inverted = np.asarray(annotate(picture, "invert"))

    assert (gray[:, :, 0] == gray[:, :, 1]).all() and gray.shape == (80, 96, 3)
    assert (inverted == 255 - np.asarray(picture)).all()


@pytest.mark.parametrize(
    ("kind", "thresholds", "message"),
    [
        ("canny", [100], "give two Canny thresholds"),
        ("canny", [200, 100], "0 <= low <= high"),
        ("sobel", None, "no control preprocessor 'sobel'"),
    ],
)
def test_bad_preprocessing_is_one_line(kind, thresholds, message):
    with pytest.raises(UsageError, match=message):
        annotate(_square(), kind, thresholds)


def test_the_request_offers_each_annotator():
    assert specs(Request)["control_preprocess"].choices == ANNOTATORS
