"""The NumPy LCM scheduler reproduces diffusers' LCMScheduler: schedule, scalings and steps."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from lcm_lite.errors import ModelError, UsageError
from lcm_lite.models.folder import read_scheduler_config
from lcm_lite.sampling.scheduler import LCMScheduler, LCMSchedulerConfig

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# LCM_Dreamshaper_v7's scheduler/scheduler_config.json
DREAMSHAPER_CONFIG = {
    "_class_name": "LCMScheduler",
    "_diffusers_version": "0.22.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995,
    "num_train_timesteps": 1000,
    "original_inference_steps": 50,
    "prediction_type": "epsilon",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "thresholding": False,
    "timestep_scaling": 10.0,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

BETA_SCHEDULES = {
    "scaled_linear": {},
    "linear": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
    "trained_betas": {"trained_betas": np.linspace(0.0001, 0.02, 1000).tolist()},
    "rescale_betas_zero_snr": {"rescale_betas_zero_snr": True},
}


def _pair(**settings) -> tuple[LCMScheduler, diffusers.LCMScheduler]:
    """Our scheduler and diffusers' with the same configuration."""
    ours = dict(settings)
    if ours.get("trained_betas") is not None:
        ours["trained_betas"] = tuple(ours["trained_betas"])
    return LCMScheduler(LCMSchedulerConfig(**ours)), diffusers.LCMScheduler(**settings)


def _diffusers_timesteps(scheduler, num_inference_steps=None, **kwargs) -> np.ndarray | None:
    """diffusers' schedule, or None where ``set_timesteps`` refuses."""
    try:
        scheduler.set_timesteps(num_inference_steps, **kwargs)
    except ValueError:
        return None
    return scheduler.timesteps.numpy()


@pytest.mark.parametrize("settings", BETA_SCHEDULES.values(), ids=BETA_SCHEDULES.keys())
@pytest.mark.parity
def test_alphas_cumprod_match_diffusers_for_every_beta_schedule(settings):
    ours, theirs = _pair(**settings)

    assert ours.alphas_cumprod.dtype == np.float32
    np.testing.assert_allclose(
        ours.alphas_cumprod, theirs.alphas_cumprod.numpy(), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("strength", [1.0, 0.8, 0.75, 0.5, 0.3, 0.1])
@pytest.mark.parametrize("original_inference_steps", [50, 30, 100, 7])
@pytest.mark.parity
def test_timesteps_match_diffusers_for_every_step_count(original_inference_steps, strength):
    ours, theirs = _pair()
    for num_inference_steps in range(1, original_inference_steps + 1):
        expected = _diffusers_timesteps(
            theirs,
            num_inference_steps,
            original_inference_steps=original_inference_steps,
            strength=strength,
        )
        if expected is None:
            with pytest.raises(UsageError, match="num_inference_steps|leaves no timestep"):
                ours.timesteps(
                    num_inference_steps,
                    original_inference_steps=original_inference_steps,
                    strength=strength,
                )
            continue
        timesteps = ours.timesteps(
            num_inference_steps,
            original_inference_steps=original_inference_steps,
            strength=strength,
        )
        assert timesteps.dtype == np.int64
        np.testing.assert_array_equal(timesteps, expected)


def test_dreamshaper_four_steps_are_the_known_lcm_schedule():
    scheduler = LCMScheduler(LCMSchedulerConfig())

    np.testing.assert_array_equal(scheduler.timesteps(4), [999, 759, 499, 259])


@pytest.mark.parity
def test_more_steps_than_original_inference_steps_is_a_usage_error():
    ours, theirs = _pair()

    assert _diffusers_timesteps(theirs, 51) is None
    with pytest.raises(
        UsageError,
        match=r"num_inference_steps \(51\) cannot be larger than "
        r"original_inference_steps \(50\)",
    ):
        ours.timesteps(51)


@pytest.mark.parametrize(
    ("timesteps", "strength"),
    [
        ([999, 759, 499, 259], 1.0),
        ([999, 879, 759, 639, 499, 379, 259, 139, 19], 1.0),
        ([999, 500, 250, 3], 1.0),
        ([800, 600, 400, 200], 1.0),
        ([999, 759, 499, 259], 0.5),
        ([999, 879, 759, 639, 499, 379, 259], 0.3),
    ],
)
@pytest.mark.parity
def test_custom_timesteps_match_diffusers(timesteps, strength):
    ours, theirs = _pair()

    np.testing.assert_array_equal(
        ours.timesteps(timesteps=timesteps, strength=strength),
        _diffusers_timesteps(theirs, timesteps=timesteps, strength=strength),
    )


def test_custom_timesteps_off_the_distillation_schedule_are_warned_about(caplog):
    scheduler = LCMScheduler(LCMSchedulerConfig())

    with caplog.at_level(logging.WARNING, logger="lcm_lite.sampling.scheduler"):
        scheduler.timesteps(timesteps=[800, 500, 3])

    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "starts at 800, not at 999" in messages
    assert "not distilled on: [500, 3]" in messages


def test_custom_timesteps_on_the_distillation_schedule_are_not_warned_about(caplog):
    scheduler = LCMScheduler(LCMSchedulerConfig())

    with caplog.at_level(logging.WARNING, logger="lcm_lite.sampling.scheduler"):
        scheduler.timesteps(timesteps=[999, 759, 499, 259])

    assert caplog.records == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_inference_steps": 4, "timesteps": [999, 499]}, "exactly one of"),
        ({}, "exactly one of"),
        ({"num_inference_steps": 0}, "num_inference_steps must be at least 1"),
        ({"num_inference_steps": 4, "original_inference_steps": 1001}, "between 1 and 1000"),
        ({"num_inference_steps": 4, "strength": 0.0}, r"strength must be in \(0, 1\]"),
        ({"num_inference_steps": 20, "strength": 0.2}, r"50 x 0.2\): at most 10 steps"),
        ({"num_inference_steps": 1, "strength": 0.01}, r"at least 0.02"),
        ({"num_inference_steps": 4, "strength": float("nan")}, r"strength must be in"),
        ({"num_inference_steps": 4, "strength": 1.5}, r"strength must be in"),
        ({"timesteps": []}, "must not be empty"),
        ({"timesteps": [999, 999, 499]}, "strictly descending"),
        ({"timesteps": [1000, 499]}, r"must be in \[0, 999\]"),
        ({"timesteps": [999, -1]}, r"must be in \[0, 999\]"),
        ({"timesteps": [999, 759], "strength": 0.4}, "keeps none of the 2 timesteps"),
    ],
)
def test_impossible_schedules_are_usage_errors(arguments, message):
    with pytest.raises(UsageError, match=message):
        LCMScheduler(LCMSchedulerConfig()).timesteps(**arguments)


@pytest.mark.parametrize("timestep_scaling", [10.0, 1.0])
@pytest.mark.parity
def test_boundary_condition_scalings_match_diffusers_for_every_timestep(timestep_scaling):
    ours, theirs = _pair(timestep_scaling=timestep_scaling)

    for timestep in range(1000):
        assert ours.boundary_condition_scalings(timestep) == pytest.approx(
            theirs.get_scalings_for_boundary_condition_discrete(timestep), rel=1e-15, abs=0
        )


def test_consistency_function_is_the_identity_at_timestep_zero():
    c_skip, c_out = LCMScheduler(LCMSchedulerConfig()).boundary_condition_scalings(0)

    assert (c_skip, c_out) == (1.0, 0.0)


STEP_SETTINGS = {
    "plain": {},
    "clip_sample": {"clip_sample": True, "clip_sample_range": 1.5},
    "thresholding": {
        "thresholding": True,
        "dynamic_thresholding_ratio": 0.9,
        "sample_max_value": 2.0,
    },
}


@pytest.mark.parametrize("settings", STEP_SETTINGS.values(), ids=STEP_SETTINGS.keys())
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parity
def test_steps_match_diffusers(prediction_type, settings):
    ours, theirs = _pair(prediction_type=prediction_type, **settings)
    theirs.set_timesteps(4)
    schedule = ours.timesteps(4)
    inputs = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 8, 8, generator=inputs) * 2
    for index, timestep in enumerate(schedule.tolist()):
        model_output = torch.randn(2, 4, 8, 8, generator=inputs) * 2
        last = index == len(schedule) - 1
        # diffusers draws its noise with the generator it is given; draw the same noise for ours
        noise = (
            None
            if last
            else torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(index)).numpy()
        )
        expected = theirs.step(
            model_output, timestep, sample, generator=torch.Generator().manual_seed(index)
        )

        prev_sample, denoised = ours.step(
            model_output.numpy(),
            timestep,
            None if last else int(schedule[index + 1]),
            sample.numpy(),
            noise,
        )

        assert prev_sample.dtype == denoised.dtype == np.float32
        np.testing.assert_allclose(denoised, expected.denoised.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(prev_sample, expected.prev_sample.numpy(), rtol=1e-6, atol=1e-6)
        sample = expected.prev_sample


@pytest.mark.parametrize("num_inference_steps", [1, 2, 4, 8])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parity
def test_last_step_returns_diffusers_denoised_sample_without_noise(
    num_inference_steps, prediction_type
):
    ours, theirs = _pair(prediction_type=prediction_type)
    theirs.set_timesteps(num_inference_steps)
    schedule = theirs.timesteps.tolist()
    inputs = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 4, 8, 8, generator=inputs)
    for timestep in schedule:  # diffusers knows the last step only by stepping to it
        model_output = torch.randn(2, 4, 8, 8, generator=inputs) * 2
        expected = theirs.step(model_output, timestep, sample, generator=torch.Generator())
        if timestep != schedule[-1]:
            sample = expected.prev_sample

    prev_sample, denoised = ours.step(
        model_output.numpy(), schedule[-1], None, sample.numpy(), None
    )

    assert prev_sample is denoised  # no noise is added after the last step
    np.testing.assert_allclose(denoised, expected.denoised.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(prev_sample, expected.prev_sample.numpy(), rtol=1e-6, atol=1e-6)
    assert np.abs(denoised - sample.numpy()).max() > 0.1  # the step did change the sample


def test_a_step_before_the_last_needs_noise():
    scheduler = LCMScheduler(LCMSchedulerConfig())
    sample = np.zeros((1, 4, 8, 8), np.float32)

    with pytest.raises(UsageError, match="needs noise"):
        scheduler.step(sample, 999, 759, sample, None)


@pytest.mark.parity
def test_scheduler_config_file_reads_the_dreamshaper_config(tmp_path):
    path = tmp_path / "scheduler_config.json"
    path.write_text(json.dumps(DREAMSHAPER_CONFIG))

    config = read_scheduler_config(path)

    assert config == LCMSchedulerConfig()
    theirs = diffusers.LCMScheduler.from_config(DREAMSHAPER_CONFIG)
    np.testing.assert_array_equal(
        LCMScheduler(config).timesteps(8), _diffusers_timesteps(theirs, 8)
    )


def test_scheduler_config_file_takes_the_values_it_uses(tmp_path):
    path = tmp_path / "scheduler_config.json"
    path.write_text(
        json.dumps(
            {
                **DREAMSHAPER_CONFIG,
                "prediction_type": "v_prediction",
                "original_inference_steps": 100,
                "timestep_scaling": 5,
                "trained_betas": [0.5] * 1000,
            }
        )
    )

    config = read_scheduler_config(path)

    assert config.prediction_type == "v_prediction"
    assert config.original_inference_steps == 100
    assert config.timestep_scaling == 5.0
    assert config.trained_betas == (0.5,) * 1000


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read .*scheduler_config.json"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"beta_schedule": "sigmoid"}), "unsupported beta_schedule 'sigmoid'"),
        (json.dumps({"prediction_type": "flow"}), "unsupported prediction_type 'flow'"),
        (json.dumps({"num_train_timesteps": "1000"}), "num_train_timesteps must be an integer"),
        (json.dumps({"clip_sample": 1}), "clip_sample must be true or false"),
        (json.dumps({"beta_end": None}), "beta_end must be a number"),
        (json.dumps({"trained_betas": [0.1, 0.2]}), "trained_betas has 2 values"),
        (json.dumps({"original_inference_steps": 0}), "original_inference_steps must be between"),
    ],
)
def test_bad_scheduler_configs_are_model_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "scheduler_config.json"
    path.write_text(content)

    with pytest.raises(ModelError, match=message) as raised:
        read_scheduler_config(path)
    assert str(path) in str(raised.value)


def test_missing_scheduler_config_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="scheduler_config.json is missing"):
        read_scheduler_config(tmp_path / "scheduler_config.json")


@pytest.mark.parametrize("strength", [0.3, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("original_inference_steps", [50, 30])
@pytest.mark.parity
def test_too_many_steps_for_a_strength_name_the_largest_step_count_diffusers_accepts(
    original_inference_steps, strength
):
    ours, theirs = _pair()
    largest = max(
        steps
        for steps in range(1, original_inference_steps + 1)
        if _diffusers_timesteps(
            theirs, steps, original_inference_steps=original_inference_steps, strength=strength
        )
        is not None
    )
    with pytest.raises(UsageError, match=f"at most {largest} steps") as error:
        ours.timesteps(
            largest + 1, original_inference_steps=original_inference_steps, strength=strength
        )
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("timestep", [999, 759, 499, 259, 19, 0])
@pytest.mark.parity
def test_add_noise_matches_diffusers(timestep):
    ours, theirs = _pair()
    rng = np.random.default_rng(timestep)
    sample, noise = (rng.standard_normal((2, 4, 8, 8), dtype=np.float32) for _ in range(2))

    expected = theirs.add_noise(
        torch.from_numpy(sample), torch.from_numpy(noise), torch.tensor([timestep])
    ).numpy()

    np.testing.assert_allclose(
        ours.add_noise(sample, noise, timestep), expected, rtol=1e-6, atol=1e-6
    )
