"""lcm_lite's pipeline gives diffusers' LatentConsistencyModelPipeline image, number for number.

Both run the same tiny random-weight LCM: diffusers from the PyTorch folder, lcm_lite from its
OpenVINO conversion, compiled with the f32 precision hint.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="session")
def diffusers_pipe(tiny_diffusers_dir):
    pipe = diffusers.LatentConsistencyModelPipeline.from_pretrained(tiny_diffusers_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _diffusers_run(
    pipe, prompt, *, steps, guidance, width, height, seed, num_images=1, latents=None
):
    """diffusers' images as uint8 arrays, and the ``denoised`` latents after each step."""
    denoised = []

    def keep_denoised(pipe, step, timestep, tensors):
        denoised.append(tensors["denoised"].numpy().copy())
        return {}

    images = pipe(
        prompt,
        num_inference_steps=steps,
        guidance_scale=guidance,
        width=width,
        height=height,
        num_images_per_prompt=num_images,
        generator=torch.Generator().manual_seed(seed),
        latents=None if latents is None else torch.from_numpy(latents),
        callback_on_step_end=keep_denoised,
        callback_on_step_end_tensor_inputs=["denoised"],
    ).images
    return [np.asarray(image) for image in images], denoised


def _lcm_lite_run(pipe, prompt, **kwargs):
    denoised = []
    result = pipe(prompt, callback=lambda info: denoised.append(info.denoised.copy()), **kwargs)
    return result, [np.asarray(image) for image in result], denoised


def _assert_images_equal_within_one_level(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def _assert_relative_close(ours, theirs, tolerance=1e-4):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert np.linalg.norm(a - b) <= tolerance * np.linalg.norm(b)


@pytest.mark.parametrize(
    ("prompt", "steps", "guidance", "width", "height"),
    [
        ("a beautiful pink unicorn, 8k", 1, 8.0, 64, 64),
        ("a beautiful pink unicorn, 8k", 2, 8.0, 64, 64),
        ("a lighthouse at dusk, oil painting", 4, 1.0, 96, 64),
        ("", 4, 14.0, 64, 128),
        ("Ein Fuchs im Schnee, 35mm", 8, 3.5, 128, 128),
    ],
)
def test_image_and_denoised_latents_equal_diffusers_from_the_same_latents(
    f32_pipe, diffusers_pipe, prompt, steps, guidance, width, height
):
    latents = np.random.default_rng(steps).standard_normal(
        (1, 4, height // 8, width // 8), dtype=np.float32
    )
    theirs, their_denoised = _diffusers_run(
        diffusers_pipe,
        prompt,
        steps=steps,
        guidance=guidance,
        width=width,
        height=height,
        seed=7,
        latents=latents,
    )
    _, ours, our_denoised = _lcm_lite_run(
        f32_pipe,
        prompt,
        steps=steps,
        guidance_scale=guidance,
        width=width,
        height=height,
        seed=7,
        latents=latents,
    )
    _assert_relative_close(our_denoised, their_denoised)
    _assert_images_equal_within_one_level(ours, theirs)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("num_images", [1, 2])
def test_same_seed_gives_the_diffusers_image_of_torch_manual_seed(
    f32_pipe, diffusers_pipe, steps, num_images
):
    seed = 1234567
    prompt = "a beautiful pink unicorn, 8k"
    theirs, their_denoised = _diffusers_run(
        diffusers_pipe,
        prompt,
        steps=steps,
        guidance=8.0,
        width=64,
        height=64,
        seed=seed,
        num_images=num_images,
    )
    result, ours, our_denoised = _lcm_lite_run(
        f32_pipe,
        prompt,
        steps=steps,
        guidance_scale=8.0,
        width=64,
        height=64,
        seed=seed,
        num_images=num_images,
    )
    assert result.seed == seed
    _assert_relative_close(our_denoised, their_denoised)
    _assert_images_equal_within_one_level(ours, theirs)


def test_a_prompt_list_follows_diffusers_batch_order(f32_pipe, diffusers_pipe):
    prompts = ["a red cube", "a blue sphere"]
    theirs, _ = _diffusers_run(
        diffusers_pipe, prompts, steps=2, guidance=8.0, width=64, height=64, seed=3, num_images=2
    )
    _, ours, _ = _lcm_lite_run(
        f32_pipe, prompts, steps=2, guidance_scale=8.0, width=64, height=64, seed=3, num_images=2
    )
    _assert_images_equal_within_one_level(ours, theirs)
