"""Image to image gives diffusers' LatentConsistencyModelImg2ImgPipeline image for the same seed.

Both run the tiny random-weight LCM: diffusers from the PyTorch folder, lcm_lite from its OpenVINO
conversion (with the VAE encoder), compiled with the f32 precision hint; with ``vae="tiny"``, both
encode and decode with the tiny random TAESD. The starting pictures are gradients with noise, so
every pixel of the result depends on the picture.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# diffusers deprecates duplicating pictures over a larger batch, but still does it
pytestmark = pytest.mark.filterwarnings("ignore:.*Initial images are now duplicating")

GUIDANCE = 8.0  # diffusers' LCM pipelines default to 8.5, lcm_lite to 8.0: pass it to both


@pytest.fixture(scope="module")
def img2img_pipe(tiny_diffusers_dir):
    pipe = diffusers.LatentConsistencyModelImg2ImgPipeline.from_pretrained(tiny_diffusers_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def varied_picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """Colour gradients across the picture plus per-pixel noise: nothing flat."""
    rows, columns = np.mgrid[0:height, 0:width]
    gradients = np.stack(
        [columns * 255 / width, rows * 255 / height, (rows + columns) * 127 / (width + height)], -1
    )
    noise = np.random.default_rng(seed).integers(0, 60, (height, width, 3))
    return Image.fromarray(np.clip(gradients + noise, 0, 255).astype(np.uint8))


def _theirs(pipe, prompt, image, *, strength, steps, seed, num_images=1):
    images = pipe(
        prompt,
        image=image,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=GUIDANCE,
        num_images_per_prompt=num_images,
        generator=torch.Generator().manual_seed(seed),
    ).images
    return [np.asarray(picture) for picture in images]


def _ours(pipe, prompt, image, *, strength, steps, seed, num_images=1, **kwargs):
    result = pipe(
        prompt,
        image=image,
        strength=strength,
        steps=steps,
        guidance_scale=GUIDANCE,
        num_images=num_images,
        seed=seed,
        **kwargs,
    )
    return [np.asarray(picture) for picture in result]


def _assert_within_one_level(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
        assert a.std() > 10  # a real image, not a flat or clipped one


@pytest.mark.parametrize("num_images", [1, 2])
@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("strength", [0.3, 0.5, 0.8, 1.0])
def test_same_seed_gives_the_diffusers_image_of_a_non_square_picture_not_a_multiple_of_8(
    f32_pipe, img2img_pipe, strength, steps, num_images
):
    picture = varied_picture(100, 75)  # generated at 96x72, as diffusers rounds down
    arguments = {"strength": strength, "steps": steps, "seed": 1234, "num_images": num_images}

    ours = _ours(f32_pipe, "a lighthouse at dusk", picture, **arguments)

    assert ours[0].shape == (72, 96, 3)
    _assert_within_one_level(
        ours, _theirs(img2img_pipe, "a lighthouse at dusk", picture, **arguments)
    )


def test_a_square_picture_of_a_multiple_of_8_gives_the_diffusers_image(f32_pipe, img2img_pipe):
    picture = varied_picture(64, 64, seed=1)
    arguments = {"strength": 0.6, "steps": 3, "seed": 7}

    _assert_within_one_level(
        _ours(f32_pipe, "a red cube", picture, **arguments),
        _theirs(img2img_pipe, "a red cube", picture, **arguments),
    )


def test_one_picture_serves_every_prompt_as_in_diffusers(f32_pipe, img2img_pipe):
    prompts = ["a red cube", "a blue sphere"]
    arguments = {"strength": 0.7, "steps": 2, "seed": 3, "num_images": 2}
    picture = varied_picture(64, 48)

    _assert_within_one_level(
        _ours(f32_pipe, prompts, picture, **arguments),
        _theirs(img2img_pipe, prompts, picture, **arguments),
    )


def test_one_picture_per_prompt_is_tiled_over_the_batch_as_in_diffusers(f32_pipe, img2img_pipe):
    prompts = ["a red cube", "a blue sphere"]
    pictures = [varied_picture(64, 48, seed=2), varied_picture(64, 48, seed=3)]
    arguments = {"strength": 0.5, "steps": 2, "seed": 11, "num_images": 2}

    ours = _ours(f32_pipe, prompts, pictures, **arguments)

    _assert_within_one_level(ours, _theirs(img2img_pipe, prompts, pictures, **arguments))
    assert not np.array_equal(ours[0], ours[1])


def test_width_and_height_resize_the_picture_as_vae_image_processor_does(f32_pipe, img2img_pipe):
    picture = varied_picture(90, 70, seed=4)
    resized = img2img_pipe.image_processor.resize(picture, height=48, width=80)
    arguments = {"strength": 0.8, "steps": 2, "seed": 5}

    ours = _ours(f32_pipe, "a fox", picture, width=80, height=48, **arguments)

    _assert_within_one_level(ours, _theirs(img2img_pipe, "a fox", resized, **arguments))


def test_the_result_depends_on_the_picture_and_less_so_the_higher_the_strength(f32_pipe):
    pictures = [varied_picture(64, 64, seed=5), varied_picture(64, 64, seed=6).rotate(90)]

    def difference(strength: float) -> float:
        a, b = (
            _ours(f32_pipe, "a tree", picture, strength=strength, steps=1, seed=9)[0]
            for picture in pictures
        )
        return float(np.abs(a.astype(int) - b.astype(int)).mean())

    assert difference(0.3) > difference(1.0) > 0


@pytest.fixture(scope="module")
def taesd_img2img_pipe(tiny_diffusers_dir, tiny_taesd_dir):
    """diffusers' img2img pipeline whose ``vae`` is the tiny random AutoencoderTiny."""
    taesd = diffusers.AutoencoderTiny.from_pretrained(tiny_taesd_dir)
    pipe = diffusers.LatentConsistencyModelImg2ImgPipeline.from_pretrained(
        tiny_diffusers_dir, vae=taesd
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("num_images", [1, 2])
@pytest.mark.parametrize("strength", [0.4, 0.8])
def test_with_the_tiny_vae_the_picture_is_encoded_and_decoded_by_taesd_as_in_diffusers(
    previews_pipe, taesd_img2img_pipe, strength, num_images
):
    picture = varied_picture(80, 56, seed=8)
    arguments = {"strength": strength, "steps": 2, "seed": 21, "num_images": num_images}

    ours = _ours(previews_pipe, "a red cube", picture, vae="tiny", **arguments)

    _assert_within_one_level(ours, _theirs(taesd_img2img_pipe, "a red cube", picture, **arguments))
