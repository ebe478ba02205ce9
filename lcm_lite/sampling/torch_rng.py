"""A NumPy twin of torch's CPU generator: ``TorchGenerator(seed).randn(shape)`` returns, bit for
bit, what ``torch.randn(shape, generator=torch.Generator().manual_seed(seed))`` returns (float32).

The algorithm, as in ATen's ``CPUGeneratorImpl`` and ``normal_kernel`` (torch 2.x, x86 with AVX2):

1. Engine: MT19937 seeded with ``seed & 0xFFFFFFFF`` by the reference ``init_genrand``.
2. ``n >= 16`` values (``normal_fill``): ``n`` float uniforms ``(random() & 0xFFFFFF) * 2**-24``,
   then Box-Muller on every block of 16: ``u1 = 1 - data[:8]``, ``u2 = data[8:]``,
   ``radius = sqrt(-2 log u1)``, ``theta = 2 pi u2``, ``data[:8] = radius cos theta``,
   ``data[8:] = radius sin theta``. When 16 does not divide ``n``, 16 fresh uniforms replace the
   last 16 values and get the same transform. ``log``, ``sin`` and ``cos`` are the float32 Cephes
   polynomials of torch's ``avx_mathfun.h``, with every ``a * b + c`` fused into one FMA as GCC
   compiles them; they are replayed here operation by operation.
3. ``n < 16`` values: ``normal_distribution<double>`` per value: two 53-bit uniforms from
   ``random64() = first << 32 | second``, ``r = sqrt(-2 log1p(-u2))``, ``theta = 2 pi u1``;
   it returns ``r cos theta`` and caches ``r sin theta`` for the next such value. The cache lives
   in the generator, so it survives the large draws in between.

torch's kernels for CPUs without AVX2, or with AVX-512, use libm's ``logf``/``sinf``/``cosf``
instead: there about a third of the ``n >= 16`` values differ from these, by up to ~3e-6.
"""

from __future__ import annotations

import math
import secrets

import numpy as np

from lcm_lite.errors import UsageError

_MT_STATE_WORDS = 624
_FILL_BLOCK = 16  # normal_fill transforms 8 (u1, u2) pairs at a time
_SMALL_DRAW_BELOW = 16  # fewer values take the scalar double-precision path

# The float32 constants of avx_mathfun.h (Julien Pommier's ports of the Cephes logf/sinf/cosf).
_F32 = np.float32
_SQRT_HALF = _F32(0.707106781186547524)
_LOG_POLYNOMIAL = np.array(
    [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1]
    + [-1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1],
    dtype=np.float32,
)
_LOG2_LOW, _LOG2_HIGH = _F32(-2.12194440e-4), _F32(0.693359375)
_FOUR_OVER_PI = _F32(1.27323954473516)
_MINUS_PI_OVER_4_PARTS = np.array(
    [-0.78515625, -2.4187564849853515625e-4, -3.77489497744594108e-8], dtype=np.float32
)
_COS_POLYNOMIAL = np.array(
    [2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2], dtype=np.float32
)
_SIN_POLYNOMIAL = np.array([-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1], dtype=np.float32)
_TWO_PI = _F32(2.0 * math.pi)


def random_seed() -> int:
    """A fresh seed from the OS entropy pool, below 2**53 so that JavaScript (a page, a JSON
    client) reads it exactly; any seed up to 2**64 - 1 can be given."""
    return secrets.randbits(53)


class TorchGenerator:
    """Draws exactly what ``torch.Generator().manual_seed(seed)`` + ``torch.randn(...,
    dtype=float32)`` draws on CPU, call after call."""

    def __init__(self, seed: int) -> None:
        is_integer = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
        if not is_integer or not 0 <= int(seed) < 2**64:
            raise UsageError(f"seed must be an integer from 0 to 2**64-1, got {seed!r}")
        self._seed = int(seed)
        self._engine = np.random.MT19937()
        self._engine.state = {
            "bit_generator": "MT19937",
            "state": {"key": _init_genrand(self._seed & 0xFFFFFFFF), "pos": _MT_STATE_WORDS},
        }
        self._next_double_normal_sample: float | None = None

    @property
    def seed(self) -> int:
        """The seed given to the constructor (``torch.Generator.initial_seed()``)."""
        return self._seed

    def randn(self, shape: tuple[int, ...]) -> np.ndarray:
        """Standard normal float32 values of ``shape``, advancing the state as torch does."""
        is_shape = isinstance(shape, tuple) and all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape
        )
        if not is_shape:
            raise UsageError(f"shape must be a tuple of non-negative integers, got {shape!r}")
        size = math.prod(shape)
        if size < _SMALL_DRAW_BELOW:
            values = np.array([self._double_normal() for _ in range(size)], dtype=np.float32)
        else:
            values = self._normal_fill(size)
        return values.reshape(shape)

    def _float_uniforms(self, count: int) -> np.ndarray:
        """``uniform_real_distribution<float>``: 24 random bits of each 32-bit output."""
        return (self._engine.random_raw(count) & 0xFFFFFF).astype(np.float32) * _F32(2.0**-24)

    def _double_uniform(self) -> float:
        """``uniform_real_distribution<double>``: 53 bits of ``random64()``."""
        first, second = (int(word) for word in self._engine.random_raw(2))
        return ((first << 32 | second) & (2**53 - 1)) * 2.0**-53

    def _double_normal(self) -> float:
        """``normal_distribution<double>``: Box-Muller, keeping the sine sample for next time."""
        if self._next_double_normal_sample is not None:
            sample, self._next_double_normal_sample = self._next_double_normal_sample, None
            return sample
        u1 = self._double_uniform()
        u2 = self._double_uniform()
        radius = math.sqrt(-2.0 * math.log1p(-u2))
        theta = 2.0 * math.pi * u1
        self._next_double_normal_sample = radius * math.sin(theta)
        return radius * math.cos(theta)

    def _normal_fill(self, size: int) -> np.ndarray:
        """``normal_fill``: uniforms for every value, Box-Muller per block of 16, tail redrawn."""
        data = self._float_uniforms(size)
        whole = size - size % _FILL_BLOCK
        data[:whole] = _box_muller_blocks(data[:whole])
        if whole != size:
            data[-_FILL_BLOCK:] = _box_muller_blocks(self._float_uniforms(_FILL_BLOCK))
        return data


def _init_genrand(seed: int) -> np.ndarray:
    """The MT19937 reference seeding of the 624-word state from a 32-bit seed."""
    key = [seed]
    for i in range(1, _MT_STATE_WORDS):
        key.append((1812433253 * (key[-1] ^ (key[-1] >> 30)) + i) & 0xFFFFFFFF)
    return np.array(key, dtype=np.uint32)


def _box_muller_blocks(uniforms: np.ndarray) -> np.ndarray:
    """torch's ``NormalFill16`` (AVX2) on consecutive blocks of 16 float32 uniforms."""
    blocks = uniforms.reshape(-1, _FILL_BLOCK)
    u1 = _F32(1.0) - blocks[:, :8]
    radius = np.sqrt(_F32(-2.0) * _log(u1))
    sin_theta, cos_theta = _sincos(_TWO_PI * blocks[:, 8:])
    return np.concatenate([radius * cos_theta, radius * sin_theta], axis=1).reshape(-1)


def _fma(a: np.ndarray, b: np.ndarray | np.float32, c: np.ndarray | np.float32) -> np.ndarray:
    """float32 ``a * b + c`` rounded once, like the FMA instructions torch's kernel runs.

    The float64 product of two float32 values is exact; the float64 sum can mislead the final
    rounding only when it lands exactly halfway between two float32 values, and there the sign
    of the part it lost decides the direction.
    """
    product = np.multiply(a, b, dtype=np.float64)
    total = product + c
    halfway = (total.view(np.uint64) & 0x1FFF_FFFF) == 0x1000_0000
    if halfway.any():
        p, t = product[halfway], total[halfway]
        addend = np.broadcast_to(c, total.shape)[halfway]
        lost = (p - (t - (t - p))) + (addend - (t - p))  # Knuth's TwoSum error term
        nudged = np.nextafter(t, np.copysign(np.inf, lost))
        total[halfway] = np.where(lost == 0, t, nudged)
    return total.astype(np.float32)


def _log(x: np.ndarray) -> np.ndarray:
    """``log256_ps``: x = m * 2**e with m in [sqrt(1/2), sqrt(2)), log x = log m + e log 2."""
    mantissa, exponent = np.frexp(x)  # mantissa in [0.5, 1)
    below = mantissa < _SQRT_HALF
    e = exponent.astype(np.float32) - below.astype(np.float32)
    m = (mantissa - _F32(1.0)) + np.where(below, mantissa, _F32(0.0))
    m_squared = m * m
    y = np.full_like(m, _LOG_POLYNOMIAL[0])
    for coefficient in _LOG_POLYNOMIAL[1:]:
        y = _fma(y, m, coefficient)
    y = _fma(y * m, m_squared, e * _LOG2_LOW)
    y = y - m_squared * _F32(0.5)
    return _fma(e, _LOG2_HIGH, m + y)


def _sincos(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sincos256_ps`` for x >= 0: reduce by the octant j of x, then the Cephes polynomials."""
    octant = (x * _FOUR_OVER_PI).astype(np.int32)
    octant = (octant + 1) & ~1
    j = octant.astype(np.float32)
    for part in _MINUS_PI_OVER_4_PARTS:  # x - j pi/4 in extended precision
        x = _fma(j, part, x)
    x_squared = x * x
    cos_poly = np.full_like(x, _COS_POLYNOMIAL[0])
    for coefficient in _COS_POLYNOMIAL[1:]:
        cos_poly = _fma(cos_poly, x_squared, coefficient)
    cos_poly = _fma(cos_poly * x_squared, x_squared, -(x_squared * _F32(0.5))) + _F32(1.0)
    sin_poly = np.full_like(x, _SIN_POLYNOMIAL[0])
    for coefficient in _SIN_POLYNOMIAL[1:]:
        sin_poly = _fma(sin_poly, x_squared, coefficient)
    sin_poly = _fma(sin_poly * x_squared, x, x)
    sine_from_sin_poly = (octant & 2) == 0
    sin = np.where(sine_from_sin_poly, sin_poly, cos_poly)
    cos = np.where(sine_from_sin_poly, cos_poly, sin_poly)
    sin = np.where((octant & 4) != 0, -sin, sin)
    cos = np.where(((octant - 2) & 4) == 0, -cos, cos)
    return sin, cos
