"""The core-to-core probe: a number where two threads can meet, None otherwise."""

import numpy as np
import pytest

from hmnist import probe, threads


@pytest.mark.skipif(
    threads.cores() < 2 or threads.max_numba_threads() < 2,
    reason="needs two cores and two Numba threads",
)
def test_round_trip_is_a_time_between_cores():
    ns = probe.round_trip_ns(repeats=2, n=2000)
    # A cache line between two cores takes tens to hundreds of nanoseconds;
    # the bounds only catch a probe that measured nothing or hung.
    assert 1 < ns < 100_000


def test_one_thread_gives_up_instead_of_hanging():
    # Both sides on one thread: the first waits for a value only the
    # second would write, gives up after its spins, and the second stops.
    shared = np.zeros(16, np.int64)
    with threads.limit(numba=1):
        probe._ping_pong(shared, 10, 100_000)
    assert shared[probe._ABORT] == 1


def test_without_two_cores_there_is_no_number(monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 1)
    assert probe.round_trip_ns() is None
