"""The LCM multistep sampler: diffusers' ``LCMScheduler`` in NumPy, stateless.

A latent consistency model (Luo et al. 2023) maps a noisy latent at timestep ``t`` straight to a
clean one through the consistency function ``f(x, t) = c_skip(t) x + c_out(t) x0_pred`` (Song et
al. 2023). It was distilled on the skipping-step schedule, every ``k``-th DDPM timestep with
``k = num_train_timesteps // original_inference_steps`` (LCM paper, sec. 4.3), and samples in a
few of those steps, re-noising each estimate to the next timestep (LCM paper, Algorithm 3).

Numbers are float32 in torch's order of operations, so they match diffusers to float32 rounding.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from lcm_lite.errors import ModelError, UsageError
from lcm_lite.json_config import from_json

log = logging.getLogger(__name__)

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
SIGMA_DATA = 0.5
_ONE = np.float32(1.0)


@dataclass(frozen=True)
class LCMSchedulerConfig:
    """The fields of ``scheduler_config.json`` the LCM sampler uses, with diffusers' defaults.

    ``steps_offset``, ``timestep_spacing`` and ``set_alpha_to_one`` are left out: diffusers'
    ``LCMScheduler`` stores them but its schedule and steps never depend on them.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    trained_betas: tuple[float, ...] | None = None
    original_inference_steps: int = 50
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    prediction_type: str = "epsilon"
    thresholding: bool = False
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0
    timestep_scaling: float = 10.0
    rescale_betas_zero_snr: bool = False

    def __post_init__(self) -> None:
        if self.trained_betas is None and self.beta_schedule not in BETA_SCHEDULES:
            raise ModelError(
                f"unsupported beta_schedule {self.beta_schedule!r} (expected one of "
                f"{', '.join(BETA_SCHEDULES)})"
            )
        if self.prediction_type not in PREDICTION_TYPES:
            raise ModelError(
                f"unsupported prediction_type {self.prediction_type!r} (expected one of "
                f"{', '.join(PREDICTION_TYPES)})"
            )
        if self.num_train_timesteps < 2:
            raise ModelError(
                f"num_train_timesteps must be at least 2, got {self.num_train_timesteps}"
            )
        if not 1 <= self.original_inference_steps <= self.num_train_timesteps:
            raise ModelError(
                f"original_inference_steps must be between 1 and num_train_timesteps "
                f"({self.num_train_timesteps}), got {self.original_inference_steps}"
            )
        if self.trained_betas is not None and len(self.trained_betas) != self.num_train_timesteps:
            raise ModelError(
                f"trained_betas has {len(self.trained_betas)} values, expected "
                f"num_train_timesteps ({self.num_train_timesteps})"
            )

    @classmethod
    def from_dict(cls, content: Mapping[str, object]) -> LCMSchedulerConfig:
        """The sampler's values from diffusers' ``scheduler_config.json`` content, the keys it
        does not use ignored; a ModelError for a value of the wrong JSON type."""
        return from_json(cls, content)


class LCMScheduler:
    """Timestep schedule, boundary-condition scalings and sampling step of an LCM.

    ``alphas_cumprod`` is diffusers' float32 ``alphas_cumprod``, the DDPM noise schedule
    ``prod(1 - beta_s, s <= t)``.
    """

    def __init__(self, config: LCMSchedulerConfig) -> None:
        self.config = config
        self.alphas_cumprod = _cumprod_float32(_ONE - _betas(config))

    def timesteps(
        self,
        num_inference_steps: int | None = None,
        *,
        original_inference_steps: int | None = None,
        timesteps: Sequence[int] | None = None,
        strength: float = 1.0,
    ) -> np.ndarray:
        """The int64 timesteps to sample at, as diffusers' ``LCMScheduler.set_timesteps``.

        The distillation schedule is ``k - 1, 2k - 1, ..., int(original_steps * strength) * k - 1``;
        ``num_inference_steps`` of them are taken, from the last, at evenly spaced indices
        (``floor(linspace(0, n, num_inference_steps, endpoint=False))``). Custom ``timesteps`` are
        checked and used as given, cut by ``strength`` as in diffusers' image-to-image pipelines.
        """
        if (num_inference_steps is None) == (timesteps is None):
            raise UsageError("pass exactly one of num_inference_steps and timesteps")
        if not 0 < strength <= 1:
            raise UsageError(f"strength must be in (0, 1], got {strength}")
        num_train_timesteps = self.config.num_train_timesteps
        original_steps = (
            self.config.original_inference_steps
            if original_inference_steps is None
            else original_inference_steps
        )
        if not 1 <= original_steps <= num_train_timesteps:
            raise UsageError(
                f"original_inference_steps must be between 1 and {num_train_timesteps}, "
                f"got {original_steps}"
            )
        skipping_step = num_train_timesteps // original_steps
        distillation_timesteps = (
            np.arange(1, int(original_steps * strength) + 1, dtype=np.int64) * skipping_step - 1
        )
        if timesteps is not None:
            return self._custom_timesteps(
                list(timesteps), distillation_timesteps, original_steps, strength
            )

        if num_inference_steps < 1:
            raise UsageError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        if not len(distillation_timesteps):
            raise UsageError(
                f"strength {strength} leaves no timestep of the {original_steps}-step "
                f"distillation schedule: use a strength of at least {1 / original_steps:g}"
            )
        if num_inference_steps > len(distillation_timesteps):
            limit = (
                f"original_inference_steps ({original_steps})"
                if strength == 1
                else f"original_inference_steps x strength ({original_steps} x {strength})"
            )
            raise UsageError(
                f"num_inference_steps ({num_inference_steps}) cannot be larger than {limit}: "
                f"at most {len(distillation_timesteps)} steps"
                + ("" if strength == 1 else f" at strength {strength}")
            )
        descending = distillation_timesteps[::-1]
        indices = np.linspace(0, len(descending), num=num_inference_steps, endpoint=False)
        return descending[np.floor(indices).astype(np.int64)]

    def _custom_timesteps(
        self,
        timesteps: list[int],
        distillation_timesteps: np.ndarray,
        original_steps: int,
        strength: float,
    ) -> np.ndarray:
        """Validate a custom schedule like diffusers: errors for what cannot work, warnings for
        what the model was not distilled on."""
        num_train_timesteps = self.config.num_train_timesteps
        if not timesteps:
            raise UsageError("timesteps must not be empty")
        if any(later >= earlier for earlier, later in pairwise(timesteps)):
            raise UsageError(f"timesteps must be in strictly descending order, got {timesteps}")
        if timesteps[0] >= num_train_timesteps or timesteps[-1] < 0:
            raise UsageError(
                f"timesteps must be in [0, {num_train_timesteps - 1}], got {timesteps}"
            )

        if strength == 1 and timesteps[0] != num_train_timesteps - 1:
            log.warning(
                "the custom timestep schedule starts at %d, not at %d: results may be unexpected",
                timesteps[0],
                num_train_timesteps - 1,
            )
        distilled = set(distillation_timesteps.tolist())
        off_schedule = [t for t in timesteps[1:] if t not in distilled]
        if off_schedule:
            log.warning(
                "the custom timestep schedule contains timesteps the model was not "
                "distilled on: %s; results may be unexpected",
                off_schedule,
            )
        if len(timesteps) > original_steps:
            log.warning(
                "the custom timestep schedule has %d steps, more than the %d of the "
                "distillation schedule: results may be unexpected",
                len(timesteps),
                original_steps,
            )

        kept = min(int(len(timesteps) * strength), len(timesteps))
        if kept == 0:
            raise UsageError(f"strength {strength} keeps none of the {len(timesteps)} timesteps")
        return np.array(timesteps[len(timesteps) - kept :], dtype=np.int64)

    def add_noise(self, sample: np.ndarray, noise: np.ndarray, timestep: int) -> np.ndarray:
        """The forward diffusion to ``timestep`` (DDPM's ``q(x_t | x_0)``, diffusers'
        ``add_noise``): ``sqrt(a) * sample + sqrt(1 - a) * noise``, ``a = alphas_cumprod[t]``."""
        alpha_prod = self.alphas_cumprod[timestep]
        return np.sqrt(alpha_prod) * sample + np.sqrt(_ONE - alpha_prod) * noise

    def boundary_condition_scalings(self, timestep: int) -> tuple[float, float]:
        """``(c_skip, c_out)`` of the consistency function at ``timestep``.

        Song et al.'s boundary-condition parameterisation as LCM uses it (diffusers'
        ``get_scalings_for_boundary_condition_discrete``): with ``s = timestep * timestep_scaling``
        and ``sigma_data = 0.5``, ``c_skip = sigma_data^2 / (s^2 + sigma_data^2)`` and
        ``c_out = s / sqrt(s^2 + sigma_data^2)``, so ``f(x, 0) = x``.
        """
        scaled_timestep = timestep * self.config.timestep_scaling
        c_skip = SIGMA_DATA**2 / (scaled_timestep**2 + SIGMA_DATA**2)
        c_out = scaled_timestep / (scaled_timestep**2 + SIGMA_DATA**2) ** 0.5
        return c_skip, c_out

    def step(
        self,
        model_output: np.ndarray,
        timestep: int,
        prev_timestep: int | None,
        sample: np.ndarray,
        noise: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One multistep LCM step from ``timestep``: ``(prev_sample, denoised)``.

        As diffusers' ``LCMScheduler.step``: ``x0`` predicted from the UNet output, clipped or
        dynamically thresholded if configured, ``denoised = c_out * x0 + c_skip * sample``, then
        re-noised to ``prev_timestep`` (the next timestep of the schedule) with the caller's
        standard normal ``noise``: ``sqrt(a) * denoised + sqrt(1 - a) * noise``,
        ``a = alphas_cumprod[prev_timestep]``. At the last step ``prev_timestep`` and ``noise``
        are None and ``prev_sample`` is ``denoised``.
        """
        alpha_prod_t = self.alphas_cumprod[timestep]
        x0 = self._predicted_original_sample(model_output, sample, alpha_prod_t)
        if self.config.thresholding:
            x0 = self._dynamic_threshold(x0)
        elif self.config.clip_sample:
            x0 = np.clip(x0, -self.config.clip_sample_range, self.config.clip_sample_range)
        c_skip, c_out = self.boundary_condition_scalings(timestep)
        denoised = c_out * x0 + c_skip * sample
        if prev_timestep is None:
            return denoised, denoised
        if noise is None:
            raise UsageError("step needs noise unless it is the last step (prev_timestep None)")
        alpha_prod_t_prev = self.alphas_cumprod[prev_timestep]
        prev_sample = (
            np.sqrt(alpha_prod_t_prev) * denoised + np.sqrt(_ONE - alpha_prod_t_prev) * noise
        )
        return prev_sample, denoised

    def _predicted_original_sample(
        self, model_output: np.ndarray, sample: np.ndarray, alpha_prod_t: np.float32
    ) -> np.ndarray:
        """``x0`` from the UNet output for the configured parameterisation (DDPM's epsilon, the
        sample itself, or v of Salimans & Ho 2022)."""
        sqrt_alpha, sqrt_beta = np.sqrt(alpha_prod_t), np.sqrt(_ONE - alpha_prod_t)
        if self.config.prediction_type == "epsilon":
            return (sample - sqrt_beta * model_output) / sqrt_alpha
        if self.config.prediction_type == "v_prediction":
            return sqrt_alpha * sample - sqrt_beta * model_output
        return model_output

    def _dynamic_threshold(self, x0: np.ndarray) -> np.ndarray:
        """Imagen's dynamic thresholding (Saharia et al. 2022), as diffusers' ``_threshold_sample``:
        per sample, ``s`` = the ``dynamic_thresholding_ratio`` quantile of ``|x0|`` clamped to
        ``[1, sample_max_value]``; ``x0`` is clipped to ``[-s, s]`` and divided by ``s``."""
        flat = x0.reshape(x0.shape[0], -1)
        s = np.quantile(np.abs(flat), self.config.dynamic_thresholding_ratio, axis=1)
        s = np.clip(s, 1, self.config.sample_max_value).astype(x0.dtype)[:, None]
        return (np.clip(flat, -s, s) / s).reshape(x0.shape)


def _betas(config: LCMSchedulerConfig) -> np.ndarray:
    """The float32 DDPM betas of diffusers' ``LCMScheduler.__init__``."""
    if config.trained_betas is not None:
        betas = np.asarray(config.trained_betas, dtype=np.float32)
    elif config.beta_schedule == "linear":
        betas = _linspace_float32(config.beta_start, config.beta_end, config.num_train_timesteps)
    elif config.beta_schedule == "scaled_linear":  # latent diffusion's schedule
        betas = (
            _linspace_float32(
                config.beta_start**0.5, config.beta_end**0.5, config.num_train_timesteps
            )
            ** 2
        )
    else:
        betas = _squaredcos_cap_v2_betas(config.num_train_timesteps)
    return _rescale_zero_terminal_snr(betas) if config.rescale_betas_zero_snr else betas


def _linspace_float32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps, dtype=torch.float32)`` on CPU, bit for bit.

    torch fills the first half with ``start + i * step`` and the second with
    ``end - (steps - 1 - i) * step``, each a fused multiply-add rounded once to float32.
    """
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float64((end32 - start32) / np.float32(steps - 1))
    index = np.arange(steps)
    from_start = index < steps // 2
    multiples = np.where(from_start, index, steps - 1 - index).astype(np.float32)
    values = np.where(
        from_start, np.float64(start32) + step * multiples, np.float64(end32) - step * multiples
    )
    return values.astype(np.float32)


def _squaredcos_cap_v2_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """The cosine schedule of Nichol & Dhariwal 2021 (diffusers' ``betas_for_alpha_bar``):
    ``beta_t = min(1 - alpha_bar((t + 1) / T) / alpha_bar(t / T), max_beta)``."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(
            1 - alpha_bar((t + 1) / num_train_timesteps) / alpha_bar(t / num_train_timesteps),
            max_beta,
        )
        for t in range(num_train_timesteps)
    ]
    return np.array(betas, dtype=np.float32)


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample Steps are Flawed"),
    Algorithm 1: shift and scale ``sqrt(alphas_cumprod)`` so that the last timestep has zero
    signal-to-noise ratio while the first keeps its value."""
    alphas_bar_sqrt = np.sqrt(_cumprod_float32(_ONE - betas))
    first, last = alphas_bar_sqrt[0], alphas_bar_sqrt[-1]
    alphas_bar = ((alphas_bar_sqrt - last) * (first / (first - last))) ** 2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return _ONE - alphas


def _cumprod_float32(values: np.ndarray) -> np.ndarray:
    """``torch.cumprod`` of a float32 tensor on CPU: accumulated in float64, stored as float32."""
    return np.cumprod(values, dtype=np.float64).astype(np.float32)
