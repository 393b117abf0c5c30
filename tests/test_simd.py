"""The explicit vectors of the numba kernel against NumPy."""

import numpy as np
import pytest
from numba import njit

from hmnist.kernels import simd

DTYPES = ["float64", "float32"]


@njit
def _copy_vector(a, out, i, k):
    """Copy the vector at a[i, k] to out[i, k], through a register."""
    simd.store(simd.load(a, i, k), out, i, k)


@njit
def _arithmetic(a, b, out):
    """Write the vector expressions of the test below to the rows of ``out``."""
    x, y = simd.load(a, 0), simd.load(b, 0)
    simd.store(x + y, out, 0, 0)
    simd.store(x - y, out, 1, 0)
    simd.store(x * y, out, 2, 0)
    simd.store(x / y, out, 3, 0)
    simd.store(-x, out, 4, 0)
    simd.store(2 * x - y * 3.0 + 1, out, 5, 0)
    simd.store(simd.splat(7, a), out, 6, 0)
    simd.store(simd.exp(x), out, 7, 0)


@njit
def _hsum(a):
    """Return the sum of the lanes of the vector at a[0]."""
    return simd.hsum(simd.load(a, 0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_lanes_fill_the_vector(dtype):
    assert simd.lanes(dtype) * np.dtype(dtype).itemsize == simd.LANE_BYTES
    assert simd.LANE_BYTES in (16, 32, 64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_load_and_store_reach_exactly_one_vector(dtype):
    n = simd.lanes(dtype)
    a = np.arange(3 * 4 * n, dtype=dtype).reshape(3, 4 * n)
    out = np.full_like(a, -1)
    _copy_vector(a, out, 2, n + 1)  # not on a vector boundary: unaligned
    want = np.full_like(a, -1)
    want[2, n + 1 : 2 * n + 1] = a[2, n + 1 : 2 * n + 1]
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_arithmetic_matches_numpy(dtype):
    n = simd.lanes(dtype)
    rng = np.random.default_rng(0)
    a = rng.uniform(-3, 3, n).astype(dtype)
    b = rng.uniform(0.5, 2, n).astype(dtype)
    out = np.zeros((8, n), dtype)
    _arithmetic(a, b, out)
    eps = np.finfo(dtype).eps
    np.testing.assert_array_equal(out[:5], [a + b, a - b, a * b, a / b, -a])
    np.testing.assert_allclose(out[5], 2 * a - b * 3 + 1, rtol=8 * eps, atol=8 * eps)
    np.testing.assert_array_equal(out[6], np.full(n, 7, dtype))
    np.testing.assert_allclose(out[7], np.exp(a), rtol=4 * eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hsum_adds_every_lane(dtype):
    n = simd.lanes(dtype)
    a = (np.arange(n) + 1).astype(dtype)
    assert _hsum(a) == n * (n + 1) / 2


def test_exp_saturates_like_numpy():
    n = simd.lanes("float64")
    a = np.resize([-1000.0, 1000.0, 0.0, -0.0], n)
    out = np.zeros((8, n))
    _arithmetic(a, np.ones(n), out)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(out[7], np.exp(a))


def test_load_outside_compiled_code_says_so():
    with pytest.raises(NotImplementedError, match="compiled"):
        simd.load(np.zeros(8), 0)
