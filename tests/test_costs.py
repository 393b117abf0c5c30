"""Costs: values and output deltas against hand computations."""

import math

import numpy as np
import pytest

from hmnist import costs

# Two samples of three outputs; labels 1 and 0.
A = np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.9]])
Y = np.array([1, 0])
TARGET = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_one_hot():
    got = costs.one_hot(np.array([2, 0, 2]), 4, np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 0]])


def test_quadratic_value():
    first = 0.5 * (0.2**2 + 0.3**2 + 0.1**2)
    second = 0.5 * (0.4**2 + 0.3**2 + 0.9**2)
    assert costs.value("quadratic", A, Y) == pytest.approx((first + second) / 2)


def test_cross_entropy_value():
    first = -(math.log(0.8) + math.log(0.7) + math.log(0.9))
    second = -(math.log(0.6) + math.log(0.7) + math.log(0.1))
    assert costs.value("cross-entropy", A, Y) == pytest.approx((first + second) / 2)


def test_cross_entropy_value_is_finite_at_saturation():
    """a = 1 where y = 1 and a = 0 where y = 0 costs nothing (0 ln 0 = 0)."""
    a = np.array([[0.0, 1.0, 0.0]])
    assert costs.value("cross-entropy", a, np.array([1])) == 0.0


def test_quadratic_delta():
    expected = np.array(
        [
            [0.2 * 0.2 * 0.8, -0.3 * 0.7 * 0.3, 0.1 * 0.1 * 0.9],
            [-0.4 * 0.6 * 0.4, 0.3 * 0.3 * 0.7, 0.9 * 0.9 * 0.1],
        ]
    )
    np.testing.assert_allclose(costs.delta("quadratic", A, TARGET), expected)


def test_cross_entropy_delta_is_a_minus_y():
    expected = np.array([[0.2, -0.3, 0.1], [-0.4, 0.3, 0.9]])
    np.testing.assert_allclose(costs.delta("cross-entropy", A, TARGET), expected)


@pytest.mark.parametrize("cost", ["quadratic", "cross-entropy"])
def test_delta_is_derivative_of_value_by_z(cost):
    """delta = dC/dz for a = sigmoid(z): check by central differences."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1, 5))
    y = np.array([3])
    target = costs.one_hot(y, 5, np.float64)
    h = 1e-6
    numeric = np.empty(5)
    for i in range(5):
        up, down = z.copy(), z.copy()
        up[0, i] += h
        down[0, i] -= h
        sig_up, sig_down = 1 / (1 + np.exp(-up)), 1 / (1 + np.exp(-down))
        numeric[i] = (costs.value(cost, sig_up, y) - costs.value(cost, sig_down, y)) / (
            2 * h
        )
    a = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(costs.delta(cost, a, target)[0], numeric, rtol=1e-6)


def test_unknown_cost():
    with pytest.raises(ValueError, match="nope"):
        costs.check("nope")
    with pytest.raises(ValueError):
        costs.delta("nope", A, TARGET)
    with pytest.raises(ValueError):
        costs.value("nope", A, Y)
