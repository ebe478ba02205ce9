"""Image to image through the Python API: one pipeline for both tasks, the encoder only on demand,
the settings recorded, bad input refused in one line before any work."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lcm_lite import LcmLiteError, LCMPipeline, ModelError, UsageError


def _picture(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    rows, columns = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(seed).integers(0, 60, (height, width, 3))
    pixels = np.stack([columns * 3, rows * 4, (rows + columns) * 2], -1) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture
def encoderless_dir(tiny_ov_dir, tmp_path):
    """``tiny_ov_dir`` converted without ``--with-vae-encoder``."""
    folder = tmp_path / "no-encoder"
    shutil.copytree(tiny_ov_dir, folder, ignore=shutil.ignore_patterns("vae_encoder"))
    return folder


def test_text_and_image_to_image_share_the_compiled_text_encoder_and_unet(tiny_ov_dir):
    pipe = LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32")
    text = pipe("a teapot", steps=2, width=64, height=48, seed=1)
    image = pipe("a kettle", image=_picture(), strength=0.5, steps=2, seed=1)

    assert {"compile_text_encoder", "compile_unet", "compile_vae_decoder"} <= set(text.timings)
    assert "compile_vae_encoder" not in text.timings
    assert set(image.timings) & {f"compile_{name}" for name in ("text_encoder", "unet")} == set()
    assert {"compile_vae_encoder", "vae_encoder"} <= set(image.timings)
    assert image[0].size == (64, 48)


def test_the_picture_decides_the_size_unless_width_and_height_are_given(f32_pipe):
    picture = _picture(100, 75)
    assert f32_pipe("", image=picture, steps=1, seed=1)[0].size == (96, 72)
    assert f32_pipe("", image=picture, steps=1, seed=1, width=64, height=64)[0].size == (64, 64)


def test_a_file_its_bytes_and_its_pil_image_give_the_same_result(f32_pipe, tmp_path):
    path = tmp_path / "start.png"
    _picture().save(path)
    images = [
        np.asarray(f32_pipe("a fox", image=source, steps=2, seed=4)[0])
        for source in (path, str(path), path.read_bytes(), Image.open(path))
    ]
    assert all(np.array_equal(images[0], other) for other in images[1:])


def test_metadata_names_the_picture_file_and_the_strength(f32_pipe, tmp_path):
    path = tmp_path / "holiday.jpg"
    _picture().save(path, quality=95)

    result = f32_pipe("a fox", image=path, strength=0.6, steps=1, seed=2, num_images=2)
    text = f32_pipe("a fox", steps=1, seed=2, width=64, height=48)

    metadata = result.metadata(1, model="m")
    assert (metadata["image"], metadata["strength"], metadata["index"]) == ("holiday.jpg", 0.6, 1)
    assert "image" not in text.metadata(0, model="m")
    assert "strength" not in text.metadata(0, model="m")


def test_an_empty_prompt_makes_variations_that_differ_by_seed(f32_pipe):
    a, b = (np.asarray(f32_pipe("", image=_picture(), steps=2, seed=s)[0]) for s in (1, 2))
    assert not np.array_equal(a, b)
    assert a.std() > 10


def test_the_same_seed_gives_the_same_image_and_the_step_callback_sees_each_step(f32_pipe):
    steps = []
    first = f32_pipe("a boat", image=_picture(), strength=0.5, steps=3, seed=9)
    again = f32_pipe(
        "a boat",
        image=_picture(),
        strength=0.5,
        steps=3,
        seed=9,
        callback=lambda info: steps.append((info.step, info.timestep)),
    )
    assert np.array_equal(np.asarray(first[0]), np.asarray(again[0]))
    assert steps == [(1, 499), (2, 339), (3, 179)]  # the last half of the schedule


def test_a_folder_without_the_encoder_does_text_to_image_and_says_how_to_get_one(
    encoderless_dir,
):
    pipe = LCMPipeline.from_pretrained(encoderless_dir, precision="f32")
    assert pipe("a teapot", steps=1, width=64, height=64, seed=1)[0].size == (64, 64)

    with pytest.raises(ModelError, match="--with-vae-encoder") as error:
        pipe("a teapot", image=_picture(), steps=1, seed=1)
    assert "\n" not in str(error.value)
    assert "has no VAE encoder" in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strength": -0.1}, r"strength must be a number in \(0, 1\], got -0.1"),
        ({"strength": 1.5}, r"strength must be a number in \(0, 1\], got 1.5"),
        ({"strength": float("nan")}, r"strength must be a number in \(0, 1\], got nan"),
        ({"strength": 0}, r"strength must be a number in \(0, 1\], got 0"),
        ({"strength": "0.5"}, r"strength must be a number in \(0, 1\], got '0.5'"),
        ({"strength": 0.1, "steps": 8}, "at most 5 steps at strength 0.1"),
        ({"strength": 0.01}, "strength 0.01 leaves no timestep"),
        ({"image": [_picture()] * 3}, "3 pictures cannot be spread over 2 images"),
        ({"image": []}, "image is an empty list"),
        ({"image": Image.new("RGB", (1, 1))}, "the picture is 1x1"),
        ({"image": b"GIF89a"}, "not a PNG, JPEG or WebP picture"),
        ({"width": 60}, "width must be a multiple of 8"),
    ],
)
def test_bad_image_to_image_arguments_are_one_line_usage_errors(f32_pipe, kwargs, message):
    arguments = {"image": _picture(), "steps": 1, "seed": 1, **kwargs}
    with pytest.raises(UsageError, match=message) as error:
        f32_pipe(["a red cube", "a blue sphere"], **arguments)
    assert "\n" not in str(error.value)


def test_openvino_genai_image2image_pipeline_reads_the_converted_folder_and_agrees(
    tiny_ov_dir, f32_pipe
):
    genai = pytest.importorskip("openvino_genai")
    ov = pytest.importorskip("openvino")
    picture = _picture(96, 64, seed=3)
    pipe = genai.Image2ImagePipeline(tiny_ov_dir, "CPU", INFERENCE_PRECISION_HINT="f32")

    theirs = pipe.generate(
        "a lighthouse",
        ov.Tensor(np.asarray(picture)[None]),
        strength=0.8,
        num_inference_steps=4,
        guidance_scale=8.0,
        generator=genai.TorchGenerator(1),
    ).data[0]
    ours = np.asarray(f32_pipe("a lighthouse", image=picture, strength=0.8, steps=4, seed=1)[0])

    assert theirs.shape == (64, 96, 3)
    assert theirs.std() > 10
    assert np.abs(theirs.astype(int) - ours.astype(int)).max() <= 1


def test_info_says_whether_the_folder_can_do_image_to_image(tiny_ov_dir, encoderless_dir):
    from lcm_lite.cli.info import describe

    assert "vae_encoder: 0." in describe(tiny_ov_dir, None)  # its size in MB, and its inputs
    assert "  input sample: f32 [?,3,?,?]" in describe(tiny_ov_dir, None).splitlines()
    assert "vae_encoder: none (image to image needs it" in describe(encoderless_dir, None)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    strength=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.3, 1])),
    steps=st.integers(-1, 6),
    picture=st.tuples(st.integers(1, 90), st.integers(1, 90)),
    size=st.one_of(st.none(), st.tuples(st.sampled_from([None, 48, 60, 64]), st.just(64))),
    num_pictures=st.integers(0, 3),
    num_images=st.integers(1, 2),
)
def test_any_image_to_image_parameters_either_generate_or_raise_one_usage_error(
    f32_pipe, strength, steps, picture, size, num_pictures, num_images
):
    pictures = [_picture(*picture, seed=n) for n in range(num_pictures)]
    width, height = size or (None, None)
    try:
        result = f32_pipe(
            ["a red cube", "a blue sphere"],
            image=pictures if num_pictures != 1 else pictures[0],
            strength=strength,
            steps=steps,
            width=width,
            height=height,
            num_images=num_images,
            seed=1,
        )
    except LcmLiteError as error:
        assert isinstance(error, UsageError)
        assert str(error) and "\n" not in str(error)
        return
    assert len(result) == 2 * num_images
    expected = (width or picture[0] // 8 * 8, height or picture[1] // 8 * 8)
    assert all(image.size == expected for image in result)
    assert 0 < strength <= 1 and min(picture) >= 8
