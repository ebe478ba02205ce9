"""The Python API an IoT script uses: load once, call many times, reproducible by seed."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from lcm_lite import Cancelled, LCMPipeline, ModelError, UsageError


def test_a_call_returns_images_of_the_asked_size_with_seed_and_timings(f32_pipe):
    result = f32_pipe("a red cube", steps=2, width=96, height=64, num_images=2, seed=5)
    assert [image.size for image in result] == [(96, 64), (96, 64)]
    assert result.images[0].mode == "RGB"
    assert result.seed == 5
    assert {"tokenize", "text_encoder", "unet_step_1", "unet_step_2", "vae_decoder"} <= set(
        result.timings
    )
    assert np.asarray(result[0]).std() > 0  # not a blank image


def test_without_a_seed_a_random_one_is_reported_and_reproduces_the_image(f32_pipe):
    first = f32_pipe("a red cube", steps=2, width=64, height=64)
    again = f32_pipe("a red cube", steps=2, width=64, height=64, seed=first.seed)
    assert 0 <= first.seed < 2**64
    assert np.array_equal(np.asarray(first[0]), np.asarray(again[0]))


def test_different_seeds_give_different_images(f32_pipe):
    a = f32_pipe("a red cube", steps=1, width=64, height=64, seed=1)
    b = f32_pipe("a red cube", steps=1, width=64, height=64, seed=2)
    assert not np.array_equal(np.asarray(a[0]), np.asarray(b[0]))


def test_the_step_callback_sees_every_step_and_can_cancel(f32_pipe):
    seen = []
    f32_pipe(
        "x",
        steps=4,
        width=64,
        height=64,
        seed=0,
        callback=lambda info: seen.append((info.step, info.num_steps, info.denoised.shape)),
    )
    assert seen == [(i, 4, (1, 4, 8, 8)) for i in range(1, 5)]
    with pytest.raises(Cancelled, match="after step 2"):
        f32_pipe("x", steps=4, width=64, height=64, seed=0, callback=lambda info: info.step < 2)


THREAD_CALLS = [
    ("a red cube", 64, 64, 0),
    ("a blue sphere", 96, 64, 1),
    (["a green cone", "a yellow torus"], 64, 80, 2),
    ("a red cube", 64, 64, 3),
]


def test_calls_from_several_threads_are_serialised_and_each_gives_its_own_image(f32_pipe):
    """Different prompts, sizes and batches at once: each thread's images are those of the same
    call made alone (no call sees another's networks, encoding or noise)."""
    results, errors = {}, []

    def run(index, prompt, width, height, seed):
        try:
            results[index] = f32_pipe(prompt, steps=2, width=width, height=height, seed=seed)
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i, *call)) for i, call in enumerate(THREAD_CALLS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for index, (prompt, width, height, seed) in enumerate(THREAD_CALLS):
        alone = f32_pipe(prompt, steps=2, width=width, height=height, seed=seed)
        together = results[index]
        assert [image.size for image in together] == [(width, height)] * len(alone)
        for image, reference in zip(together, alone, strict=True):
            assert np.array_equal(np.asarray(image), np.asarray(reference))


def test_a_long_prompt_is_truncated_and_the_dropped_tokens_are_reported(f32_pipe, caplog):
    caplog.set_level(logging.WARNING, logger="lcm_lite")
    for _ in range(2):  # the second call reuses the encoding, and warns again
        caplog.clear()
        result = f32_pipe(" ".join(["word"] * 100), steps=1, width=64, height=64, seed=0)
        assert result.dropped_tokens[0] > 0
        assert "tokens dropped" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 60}, "width must be a multiple of 8"),
        ({"height": 0}, "height must be from 8"),
        ({"steps": 0}, "steps must be from 1"),
        ({"num_images": 0}, "num_images must be from 1"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
    ],
)
def test_bad_arguments_raise_a_usage_error_that_names_them(f32_pipe, kwargs, message):
    arguments = {"steps": 1, "width": 64, "height": 64, **kwargs}
    with pytest.raises(UsageError, match=message):
        f32_pipe("a red cube", **arguments)


def test_a_missing_folder_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="model folder not found"):
        LCMPipeline.from_pretrained(tmp_path / "nothing")


def test_a_repeated_prompt_reuses_its_encoding_and_gives_the_same_image(tiny_ov_dir):
    pipe = LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32")
    first = pipe("a teapot", steps=1, width=64, height=64, seed=8)
    again = pipe("a teapot", steps=1, width=64, height=64, seed=8)
    assert first.timings["text_encoder"] > 0
    assert again.timings["text_encoder"] == 0.0
    assert np.array_equal(np.asarray(first[0]), np.asarray(again[0]))
    other = pipe("a kettle", steps=1, width=64, height=64, seed=8)
    assert other.timings["text_encoder"] > 0
    assert not np.array_equal(np.asarray(first[0]), np.asarray(other[0]))


def test_the_settings_record_the_timesteps_run_not_the_steps_asked(f32_pipe):
    custom = f32_pipe("x", steps=4, timesteps=[999, 499], width=64, height=64, seed=1)
    assert custom.settings.steps == 2 and custom.settings.timesteps == (999, 499)
    metadata = custom.metadata(0, "m")
    assert (metadata["steps"], metadata["timesteps"]) == (2, "999,499")
    assert metadata["original_inference_steps"] == 50
    # two calls that differ only in original_inference_steps: different images, and metadata
    short = f32_pipe("x", steps=3, original_inference_steps=20, width=64, height=64, seed=1)
    full = f32_pipe("x", steps=3, width=64, height=64, seed=1)
    assert not np.array_equal(np.asarray(short[0]), np.asarray(full[0]))
    assert short.metadata(0, "m") != full.metadata(0, "m")
    assert short.metadata(0, "m")["timesteps"] == "999,699,349"
    assert full.metadata(0, "m")["timesteps"] == "999,679,339"
