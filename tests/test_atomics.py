"""The atomic intrinsics, one thread at a time: what each returns and leaves."""

import numpy as np
from numba import njit

from hmnist import atomics


@njit
def add_twice(a):
    first = atomics.fetch_add(a, 3, 5)
    second = atomics.fetch_add(a, 3, -2)
    return first, second


@njit
def exchange(a, expected, value):
    return atomics.compare_exchange(a, 1, expected, value)


@njit
def store_then_load(a, v):
    atomics.store(a, 2, v)
    atomics.pause()
    return atomics.load(a, 2)


def test_fetch_add_returns_the_value_before():
    a = np.zeros(8, np.int64)
    a[3] = 10
    assert add_twice(a) == (10, 15)
    assert a[3] == 13
    assert a.sum() == 13  # no other slot touched


def test_compare_exchange_writes_only_over_the_expected_value():
    a = np.zeros(4, np.int64)
    a[1] = 7
    assert not exchange(a, 6, 9)
    assert a[1] == 7
    assert exchange(a, 7, 9)
    assert a[1] == 9


def test_store_and_load_round_trip():
    a = np.zeros(4, np.int64)
    assert store_then_load(a, 1 << 41) == 1 << 41
    assert list(a) == [0, 0, 1 << 41, 0]
