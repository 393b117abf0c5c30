"""Median, IQR, geometric mean and the Amdahl fit on numbers worked by hand."""

import numpy as np
import pytest

from hmnist import stats


def test_median_and_iqr_of_known_numbers():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert stats.median(values) == 3.0
    # Linear percentiles of 1..5: 25th is 2, 75th is 4.
    assert stats.iqr(values) == 2.0
    assert stats.median([1.0, 2.0]) == 1.5
    assert stats.iqr([7.0]) == 0.0


def test_geomean():
    assert stats.geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert stats.geomean([None, 3.0]) == pytest.approx(3.0)
    assert stats.geomean([]) is None


@pytest.mark.parametrize("p", [0.0, 0.5, 0.9, 1.0])
def test_amdahl_fit_recovers_a_known_parallel_fraction(p):
    n = np.array([1, 2, 4, 8])
    t1 = 10.0
    t1_fit, p_fit = stats.amdahl_fit(n, t1 * ((1 - p) + p / n))
    assert t1_fit == pytest.approx(t1)
    assert p_fit == pytest.approx(p, abs=1e-12)


def test_amdahl_fit_with_noise_and_without_one_thread():
    rng = np.random.default_rng(0)
    n = np.array([2, 3, 4, 6, 8, 2, 4, 8])
    exact = 4.0 * (0.2 + 0.8 / n)
    t1, p = stats.amdahl_fit(n, exact * (1 + 0.01 * rng.standard_normal(len(n))))
    assert t1 == pytest.approx(4.0, rel=0.05)
    assert p == pytest.approx(0.8, abs=0.03)


def test_amdahl_fit_says_when_threads_slow_things_down():
    # Two threads take longer than one: P comes out negative, not clipped.
    _, p = stats.amdahl_fit([1, 2], [1.0, 1.5])
    assert p == pytest.approx(-1.0)


def test_amdahl_fit_needs_two_thread_counts():
    with pytest.raises(ValueError, match="two distinct"):
        stats.amdahl_fit([2, 2], [1.0, 1.1])
