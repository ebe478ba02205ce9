"""TorchGenerator draws what torch's CPU generator draws; torch, where installed, is the judge."""

from __future__ import annotations

import numpy as np
import pytest

from lcm_lite.errors import UsageError
from lcm_lite.sampling.torch_rng import TorchGenerator, _fma, random_seed

SEEDS = [0, 1, 42, 1234567, 2**32 + 5, 2**63 + 3, 2**64 - 1]
SIZES = [1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 100, 1000, 4096, 9999, 10000]
SHAPES = [(size,) for size in SIZES] + [(3, 5), (1, 4, 8, 8), (2, 4, 64, 64)]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def assert_same_draws(torch, actual: np.ndarray, expected) -> None:
    """Bit-exact against torch's AVX2 kernel; its other kernels use libm and differ by ~1e-6."""
    expected = expected.numpy()
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if torch.backends.cpu.get_cpu_capability() == "AVX2" or expected.size < 16:
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parity
def test_randn_equals_torch_randn_for_every_size_and_seed(torch, seed, shape):
    expected = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    assert_same_draws(torch, TorchGenerator(seed).randn(shape), expected)


@pytest.mark.parametrize("seed", [0, 2**32 + 5, 2**64 - 1])
@pytest.mark.parity
def test_successive_draws_continue_torchs_stream_and_cached_normal(torch, seed):
    # Odd small draws leave torch's cached second Box-Muller sample behind; it must outlive the
    # large draws in between and be the first value of the next small draw.
    shapes = [(5,), (100,), (3,), (1, 4, 64, 64), (1,), (17,), (2, 7), (16,), (4,)]
    generator, reference = TorchGenerator(seed), torch.Generator().manual_seed(seed)
    for shape in shapes:
        assert_same_draws(torch, generator.randn(shape), torch.randn(shape, generator=reference))


@pytest.mark.parity
def test_seeds_share_a_stream_when_their_low_32_bits_agree():
    # torch seeds MT19937 with seed & 0xFFFFFFFF, so 5, 2**32+5 and 2**63+5 draw the same.
    draws = [TorchGenerator(seed).randn((40,)) for seed in (5, 2**32 + 5, 2**63 + 5)]
    np.testing.assert_array_equal(draws[0], draws[1])
    np.testing.assert_array_equal(draws[0], draws[2])
    assert not np.array_equal(draws[0], TorchGenerator(6).randn((40,)))


@pytest.mark.parametrize("shape", [(), (0,), (7,), (1, 4, 64, 64)], ids=str)
def test_randn_returns_c_contiguous_float32_of_the_requested_shape(shape):
    values = TorchGenerator(3).randn(shape)
    assert values.shape == shape
    assert values.dtype == np.float32
    assert values.flags.c_contiguous


def test_draws_look_standard_normal():
    values = TorchGenerator(7).randn((4, 4, 96, 96))
    assert abs(values.mean()) < 0.01
    assert abs(values.std() - 1) < 0.01
    assert np.isfinite(values).all()


def test_seed_is_kept_and_read_only():
    generator = TorchGenerator(2**64 - 1)
    assert generator.seed == 2**64 - 1
    with pytest.raises(AttributeError):
        generator.seed = 1


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True, "42", None])
def test_seed_outside_0_to_2_pow_64_or_not_an_integer_is_a_usage_error(seed):
    with pytest.raises(UsageError, match="seed must be an integer from 0 to 2\\*\\*64-1"):
        TorchGenerator(seed)


@pytest.mark.parametrize("shape", [(-1, 4), [4], (2.5,), 4], ids=str)
def test_shape_that_is_not_a_tuple_of_sizes_is_a_usage_error(shape):
    with pytest.raises(UsageError, match="shape must be a tuple"):
        TorchGenerator(0).randn(shape)


def test_random_seed_is_a_fresh_integer_below_2_pow_53_that_javascript_reads_exactly():
    seeds = {random_seed() for _ in range(8)}
    assert len(seeds) == 8
    assert all(isinstance(seed, int) and 0 <= seed < 2**53 for seed in seeds)


def test_fma_rounds_once_even_where_float64_lands_halfway():
    # With c = 1 + 2**-23, a*b + c is 1 + 2**-24 + 2**-54, then 1 + 3 * 2**-24 - 2**-54: float64
    # rounds both onto a float32 halfway point, which ties to an even neighbour, 1.0 or
    # 1 + 2**-22; rounded once, both are 1 + 2**-23. The last sum is a true tie: it goes to 1.0.
    a = np.array([-(1 + 2**-15) * 2**-24, (1 + 2**-15) * 2**-24, 2**-24], dtype=np.float32)
    b = np.array([1 - 2**-15, 1 - 2**-15, 1], dtype=np.float32)
    c = np.array([1 + 2**-23, 1 + 2**-23, 1], dtype=np.float32)
    expected = np.array([1 + 2**-23, 1 + 2**-23, 1], dtype=np.float32)
    rounded_twice = (a.astype(np.float64) * b + c).astype(np.float32)
    assert (rounded_twice[:2] != expected[:2]).all()
    np.testing.assert_array_equal(_fma(a, b, c), expected)
