"""How far apart two cores are right now: a cache line's round trip.

On a virtual machine the hypervisor places the virtual cores on physical
ones and moves them. On this suite's 2-core machine a line written by one
core reached the other and came back in about 80 ns in some stretches
and about 330 ns in others, each lasting from seconds to minutes, and
the numba kernel's epochs on two threads took about 1.2x as long in the
second kind. A benchmark record that carries this number says which
kind of stretch it was measured in; it does not say why a cell was slow
(profiles of far stretches found the cores' own work slowed as well).

The probe is two of Numba's threads passing a counter back and forth
through one cache line: one writes an odd value and waits for the next
even one, the other waits for the odd value and writes the even one.
It needs two Numba threads that run at once (OpenMP gives each thread
one of the two iterations of ``prange(2)``); where they do not, the
waiting side gives up after a bounded number of spins and the probe
reports None rather than hanging.
"""

import time

import numpy as np
from numba import njit, prange

from . import threads
from .atomics import load, store

# Values of one round trip, and how many to time per measurement.
ROUND_TRIPS = 20_000
# A wait that spins this often (a quarter of a second here) is taken as
# the other thread never coming.
_MAX_SPINS = 500_000_000
# Slots of the shared int64 array: the counter, and an abort flag on
# another cache line.
_COUNTER, _ABORT = 0, 8


@njit(parallel=True, cache=True)
def _ping_pong(shared, n, max_spins):
    """Pass the counter ``shared[0]`` between two threads ``n`` times."""
    for side in prange(2):
        for i in range(n):
            if side == 0:
                store(shared, _COUNTER, 2 * i + 1)
                want = 2 * i + 2
            else:
                want = 2 * i + 1
            spins = 0
            while load(shared, _COUNTER) != want:
                spins += 1
                if spins % 1024 == 0 and (
                    spins > max_spins or load(shared, _ABORT) != 0
                ):
                    store(shared, _ABORT, 1)
                    break
            if load(shared, _ABORT) != 0:
                break
            if side == 1:
                store(shared, _COUNTER, 2 * i + 2)


def round_trip_ns(repeats=5, n=ROUND_TRIPS):
    """Return the nanoseconds of a cache line's round trip between two cores.

    The fastest of ``repeats`` timed runs: another thread that takes a
    core for a while (a BLAS thread still spinning, say) can only make a
    run slower, never faster than the cores' placement allows.

    Parameters
    ----------
    repeats : int
        Timed runs of ``n`` round trips each, after one untimed run.
    n : int

    Returns
    -------
    float or None
        None when this process may use fewer than two cores, Numba has
        fewer than two threads, or its two threads did not run at once.
    """
    if threads.cores() < 2 or threads.max_numba_threads() < 2:
        return None
    shared = np.zeros(16, np.int64)
    seconds = []
    with threads.limit(numba=2):
        for attempt in range(repeats + 1):
            shared[:] = 0
            start = time.perf_counter()
            _ping_pong(shared, n, _MAX_SPINS)
            elapsed = time.perf_counter() - start
            if shared[_ABORT]:
                return None
            if attempt:
                seconds.append(elapsed)
    return min(seconds) / n * 1e9
