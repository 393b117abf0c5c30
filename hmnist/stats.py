"""The few statistics the benchmark reports: median, IQR, Amdahl's law.

Timings of repeated runs are skewed (a run can only be slowed down by the
rest of the machine), so the centre is the median and the spread the
interquartile range, never mean and standard deviation.
"""

import math

import numpy as np


def median(values):
    """Return the median of ``values``, a non-empty sequence of numbers."""
    return float(np.median(np.asarray(values, dtype=float)))


def iqr(values):
    """Return the interquartile range (75th minus 25th percentile, linear)."""
    q25, q75 = np.percentile(np.asarray(values, dtype=float), [25, 75])
    return float(q75 - q25)


def geomean(values):
    """Return the geometric mean of positive ``values``, or None if empty."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def amdahl_fit(n_threads, seconds):
    """Fit Amdahl's law ``T(n) = T1 * ((1 - P) + P / n)`` by least squares.

    The model is linear in ``a = T1 (1 - P)`` and ``b = T1 P``:
    ``T(n) = a + b / n``; both are fitted, so ``T1`` need not be measured.

    Parameters
    ----------
    n_threads : sequence of int, shape (k,)
        Thread counts; at least two distinct ones.
    seconds : sequence of float, shape (k,)
        The time measured at each thread count.

    Returns
    -------
    t1 : float
        The fitted time on one thread.
    p : float
        The parallel fraction. It is not clipped: P < 0 says that threads
        slowed the work down, P > 1 that they sped it up beyond the cores
        (caches, or noise).

    Raises
    ------
    ValueError
        With fewer than two distinct thread counts.
    """
    n = np.asarray(n_threads, dtype=float)
    t = np.asarray(seconds, dtype=float)
    if len(np.unique(n)) < 2:
        raise ValueError("an Amdahl fit needs at least two distinct thread counts")
    # (k, 2) design matrix: columns 1 and 1/n
    design = np.column_stack([np.ones_like(n), 1 / n])
    (a, b), *_ = np.linalg.lstsq(design, t, rcond=None)
    t1 = float(a + b)
    return t1, float(b / t1)
