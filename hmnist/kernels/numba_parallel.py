"""The ``numba`` kernel: a whole epoch of mini-batch SGD in compiled code.

The equations are those of ``loop.py``; activations and errors are kept as
``(units, batch)`` arrays, ``A[l]`` and ``D[l]`` being the output and the
error ``dC/dz`` of ``weights[l]``. A batch is never copied: its samples
are read as rows ``x[rows[s]]`` of the training array, ``rows`` being the
batch's slice of the epoch's ``order``.

How the work is split across threads, and why. At the book's batch of 10
the matrices are thin ((100, 784) @ (784, 10)), too small for BLAS to
spread over cores, and a parallel region per matrix product costs more
than it saves. Here the split is over the first layer's hidden units
``j``, in pairs, each thread owning whole rows ``W0[j, :]`` and with them,
for the same ``j``:

1. the error of unit ``j``: ``D0[j] = W1[:, j] . D1 * A0[j] (1 - A0[j])``;
2. the update of column ``W1[:, j]`` (only unit ``j``'s thread reads it);
3. the update of row ``W0[j, :]`` and ``b0[j]`` with this batch;
4. the forward pass of the *next* batch through the updated row ``j``;
5. unit ``j``'s terms ``W1[:, j] A0[j]`` of the next batch's sums in
   layer 1, kept per pair so that the serial part only adds them up.

With step 4 in the same region, row ``j`` is still in cache from step 3,
so ``W0`` (the bulk of the weights) goes through cache once per batch, and
a batch costs one parallel region, not four. With two threads each one's
half of ``W0`` (314 kB in float64) stays in its core's L2 cache from one
batch to the next. Inside the region samples go in fives: one sweep along
two rows reads each pixel once and keeps ten sums in registers, 7 loads
per 10 multiply-adds, so the loop is bound by multiply-adds rather than by
loads (a batch of 10 is two sweeps, with no leftover samples). No thread
writes what another reads, the pairs' terms are added in a fixed order,
so there are no locks and the weights do not depend on the number of
threads. The sequence of updates is exactly SGD's: batch ``t + 1`` goes
forward only through weights that batch ``t`` has updated. What stays
serial per batch is small: adding the pairs' terms, the layers after
layer 1, the output error and the bias of layer 1.

What it leaves out: NumPy's ``np.dot`` (it would call BLAS, whose threads
this kernel does not control), and any reordering of samples. Its time
per sample does not fall with the batch size, so at batch 100 on one
thread it is slower than ``matmul``; sweeps tiled by 64 to 256 pixels
were measured no faster. The only fast-math flags are ``reassoc`` and
``contract`` (sums may be vectorised and fused multiply-adds used);
results still agree with ``loop`` to the rounding bounds the tests state.
"""

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

from .. import costs, threads
from .base import Kernel

_FLAGS = {"reassoc", "contract"}
# Below this many multiply-adds a layer runs serially: a parallel region
# costs a few microseconds, about what 20,000 multiply-adds take.
_PARALLEL_MIN_WORK = 20_000

_jit = njit(cache=True, fastmath=_FLAGS)
_jit_parallel = njit(cache=True, fastmath=_FLAGS, parallel=True)


@_jit
def _sigmoid(z):
    """Return the logistic function of a scalar ``z``."""
    return 1.0 / (1.0 + np.exp(-z))


@_jit
def _unit_forward(w, b, a_in, a_out, i, m):
    """Set ``a_out[i, :m]``, unit ``i``'s output; ``a_in`` is ``(n_in, batch)``.

    The sums run along the rows of ``a_in``, all samples at once, so the
    innermost loop reads contiguous memory.
    """
    for s in range(m):
        a_out[i, s] = b[i]
    for k in range(w.shape[1]):
        for s in range(m):
            a_out[i, s] += w[i, k] * a_in[k, s]
    for s in range(m):
        a_out[i, s] = _sigmoid(a_out[i, s])


@_jit
def _layer_forward_serial(w, b, a_in, a_out, m):
    """Forward ``m`` samples through one layer on one thread."""
    for i in range(w.shape[0]):
        _unit_forward(w, b, a_in, a_out, i, m)


@_jit_parallel
def _layer_forward_parallel(w, b, a_in, a_out, m):
    """Forward ``m`` samples through one layer, output units split over threads."""
    for i in prange(w.shape[0]):
        _unit_forward(w, b, a_in, a_out, i, m)


@_jit
def _layer_forward(w, b, a_in, a_out, m):
    """Forward a layer after the first, in parallel only if it is large enough."""
    if w.size * m < _PARALLEL_MIN_WORK:
        _layer_forward_serial(w, b, a_in, a_out, m)
    else:
        _layer_forward_parallel(w, b, a_in, a_out, m)


@_jit
def _first_unit_forward(w0, b0, x, rows, a0, j, m):
    """Set ``a0[j, :m]``: unit ``j`` of the first layer for samples ``x[rows]``."""
    for s in range(m):
        z = b0[j]
        for k in range(w0.shape[1]):
            z += w0[j, k] * x[rows[s], k]
        a0[j, s] = _sigmoid(z)


@_jit_parallel
def _first_forward(w0, b0, x, rows, a0, m):
    """Forward samples ``x[rows[:m]]`` through the first layer, units over threads."""
    for j in prange(w0.shape[0]):
        _first_unit_forward(w0, b0, x, rows, a0, j, m)


@_jit
def _output_delta(a, labels, order, start, m, cost, delta):
    """Set ``delta[:, :m]`` to the output error dC/dz (cost 0 quadratic, 1 CE)."""
    one = a.dtype.type(1)
    for s in range(m):
        label = labels[order[start + s]]
        for i in range(a.shape[0]):
            target = one if i == label else one - one
            if cost == 0:
                delta[i, s] = (a[i, s] - target) * a[i, s] * (one - a[i, s])
            else:
                delta[i, s] = a[i, s] - target


@_jit
def _unit_back(w, a_in, d_out, d_in, i, m, c):
    """Set ``d_in[i]`` from column ``w[:, i]``, then update that column.

    ``w`` is ``(n_out, n_in)``, ``a_in``/``d_in`` are ``(n_in, batch)`` and
    ``d_out`` is ``(n_out, batch)``; ``c`` is ``eta / m``. With ``c = 0``
    the column is left alone (the gradient path).
    """
    one = a_in.dtype.type(1)
    # Rows of d_out are contiguous: run along them, all samples at once.
    for s in range(m):
        d_in[i, s] = one - one
    for r in range(w.shape[0]):
        w_ri = w[r, i]
        for s in range(m):
            d_in[i, s] += w_ri * d_out[r, s]
    for s in range(m):
        d_in[i, s] *= a_in[i, s] * (one - a_in[i, s])
    for r in range(w.shape[0]):
        grad = one - one
        for s in range(m):
            grad += d_out[r, s] * a_in[i, s]
        w[r, i] -= c * grad


@_jit_parallel
def _layer_back(w, a_in, d_out, d_in, m, c):
    """Back-propagate through a middle layer and update it, input units over threads."""
    for i in prange(w.shape[1]):
        _unit_back(w, a_in, d_out, d_in, i, m, c)


@_jit
def _bias_update(b, d_out, m, c):
    """Update ``b -= c * sum_s d_out[:, s]``."""
    for r in range(b.shape[0]):
        grad = b.dtype.type(0)
        for s in range(m):
            grad += d_out[r, s]
        b[r] -= c * grad


@_jit
def _row_update(w0, b0, x, rows, d0, j, m, c):
    """Update row ``w0[j, :]`` and ``b0[j]`` with the batch's error ``d0[j]``."""
    for s in range(m):
        step = c * d0[j, s]
        for k in range(w0.shape[1]):
            w0[j, k] -= step * x[rows[s], k]
        b0[j] -= step


@_jit
def _pair_update(w0, b0, x, rows, d0, j, m, c):
    """Update rows ``j`` and ``j + 1`` of ``w0``, five samples per sweep.

    Each sweep along the two rows reads five samples' pixels once for both
    rows: 7 loads and 2 stores per 10 multiply-adds, where one row and one
    sample at a time would need 2 loads and a store per multiply-add.
    Samples left over when ``m`` is not a multiple of five go one by one.
    """
    n_in = w0.shape[1]
    s = 0
    while s + 5 <= m:
        r0, r1, r2, r3, r4 = rows[s], rows[s + 1], rows[s + 2], rows[s + 3], rows[s + 4]
        p0, p1, p2, p3, p4 = (
            c * d0[j, s], c * d0[j, s + 1], c * d0[j, s + 2],
            c * d0[j, s + 3], c * d0[j, s + 4],
        )  # fmt: skip
        q0, q1, q2, q3, q4 = (
            c * d0[j + 1, s], c * d0[j + 1, s + 1], c * d0[j + 1, s + 2],
            c * d0[j + 1, s + 3], c * d0[j + 1, s + 4],
        )  # fmt: skip
        for k in range(n_in):
            x0, x1, x2 = x[r0, k], x[r1, k], x[r2, k]
            x3, x4 = x[r3, k], x[r4, k]
            w0[j, k] = w0[j, k] - p0 * x0 - p1 * x1 - p2 * x2 - p3 * x3 - p4 * x4
            w0[j + 1, k] = (
                w0[j + 1, k] - q0 * x0 - q1 * x1 - q2 * x2 - q3 * x3 - q4 * x4
            )
        b0[j] -= p0 + p1 + p2 + p3 + p4
        b0[j + 1] -= q0 + q1 + q2 + q3 + q4
        s += 5
    for r in range(s, m):
        p, q = c * d0[j, r], c * d0[j + 1, r]
        for k in range(n_in):
            w0[j, k] -= p * x[rows[r], k]
            w0[j + 1, k] -= q * x[rows[r], k]
        b0[j] -= p
        b0[j + 1] -= q


@_jit
def _pair_forward(w0, b0, x, rows, a0, j, m):
    """Set ``a0[j]`` and ``a0[j + 1]`` for samples ``x[rows[:m]]``, five at a time.

    Ten sums live in registers through a sweep: 7 loads per 10 multiply-adds.
    """
    n_in = w0.shape[1]
    s = 0
    while s + 5 <= m:
        r0, r1, r2, r3, r4 = rows[s], rows[s + 1], rows[s + 2], rows[s + 3], rows[s + 4]
        z00 = z01 = z02 = z03 = z04 = b0[j]
        z10 = z11 = z12 = z13 = z14 = b0[j + 1]
        for k in range(n_in):
            u, v = w0[j, k], w0[j + 1, k]
            x0, x1, x2 = x[r0, k], x[r1, k], x[r2, k]
            x3, x4 = x[r3, k], x[r4, k]
            z00 += u * x0
            z01 += u * x1
            z02 += u * x2
            z03 += u * x3
            z04 += u * x4
            z10 += v * x0
            z11 += v * x1
            z12 += v * x2
            z13 += v * x3
            z14 += v * x4
        for i, z in enumerate((z00, z01, z02, z03, z04)):
            a0[j, s + i] = _sigmoid(z)
        for i, z in enumerate((z10, z11, z12, z13, z14)):
            a0[j + 1, s + i] = _sigmoid(z)
        s += 5
    for r in range(s, m):
        z0, z1 = b0[j], b0[j + 1]
        for k in range(n_in):
            z0 += w0[j, k] * x[rows[r], k]
            z1 += w0[j + 1, k] * x[rows[r], k]
        a0[j, r], a0[j + 1, r] = _sigmoid(z0), _sigmoid(z1)


@_jit
def _pair_partials(w1, a0, parts, p, m):
    """Set ``parts[p, :, :m]`` to pair ``p``'s share of layer 1's sums.

    Pair ``p`` is units ``j = 2p`` and ``j + 1`` (the last may be alone):
    ``parts[p] = w1[:, j:j+2] @ a0[j:j+2, :m]``, shapes ``(n_1, 2) @ (2, m)``.
    """
    j = 2 * p
    n_units = min(2, a0.shape[0] - j)
    for i in range(w1.shape[0]):
        for s in range(m):
            parts[p, i, s] = w1[i, j] * a0[j, s]
        for u in range(j + 1, j + n_units):
            for s in range(m):
                parts[p, i, s] += w1[i, u] * a0[u, s]


@_jit
def _sum_partials(parts, b1, a1, m):
    """Set ``a1[:, :m]`` to the sigmoid of ``b1`` plus ``parts`` summed in order."""
    for i in range(a1.shape[0]):
        for s in range(m):
            a1[i, s] = b1[i]
    for p in range(parts.shape[0]):
        for i in range(a1.shape[0]):
            for s in range(m):
                a1[i, s] += parts[p, i, s]
    for i in range(a1.shape[0]):
        for s in range(m):
            a1[i, s] = _sigmoid(a1[i, s])


@_jit_parallel
def _first_layer_step(w0, b0, w1, a0, d0, d1, x, rows, m, c, rows_next, parts):
    """Finish a batch and start the next, pairs of hidden units over threads.

    For each pair of units ``j, j + 1``: their errors (when there is a
    layer ``w1`` after the first), the update of columns ``w1[:, j:j+2]``
    and rows ``w0[j:j+2]`` with samples ``x[rows]``, the forward pass of
    the next batch ``x[rows_next]`` through those rows, and the pair's
    share ``parts[j // 2]`` of the next batch's sums in layer 1.
    """
    n_hidden = w0.shape[0]
    m_next = rows_next.shape[0]
    for p in prange((n_hidden + 1) // 2):
        j = 2 * p
        n_units = min(2, n_hidden - j)
        if w1.shape[0] > 0:
            for u in range(j, j + n_units):
                _unit_back(w1, a0, d1, d0, u, m, c)
        if n_units == 2:
            _pair_update(w0, b0, x, rows, d0, j, m, c)
            _pair_forward(w0, b0, x, rows_next, a0, j, m_next)
        else:
            _row_update(w0, b0, x, rows, d0, j, m, c)
            _first_unit_forward(w0, b0, x, rows_next, a0, j, m_next)
        if w1.shape[0] > 0:
            _pair_partials(w1, a0, parts, p, m_next)


@_jit
def _forward_from(weights, biases, acts, first, m):
    """Forward the batch from ``acts[first - 1]`` to the last layer."""
    for l in range(first, len(weights)):
        _layer_forward(weights[l], biases[l], acts[l - 1], acts[l], m)


@_jit
def _epoch(weights, biases, acts, deltas, x, labels, order, batch_size, eta, cost):
    """Run every mini-batch of one epoch; see NumbaKernel.train_epoch."""
    n_layers = len(weights)
    n = order.shape[0]
    w0, b0 = weights[0], biases[0]
    # A (0, 0) stand-in for ``w1`` when there is no hidden layer.
    w1 = weights[1] if n_layers > 1 else np.empty((0, 0), w0.dtype)
    d1 = deltas[1] if n_layers > 1 else deltas[0]
    n_pairs = (w0.shape[0] + 1) // 2
    parts = np.empty((n_pairs, w1.shape[0], batch_size), x.dtype)
    c_arr = np.empty(1, x.dtype)

    m = min(batch_size, n)
    _first_forward(w0, b0, x, order, acts[0], m)
    if n_layers > 1:
        for p in range(n_pairs):
            _pair_partials(w1, acts[0], parts, p, m)
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        c_arr[0] = eta / m
        c = c_arr[0]
        if n_layers > 1:
            _sum_partials(parts, biases[1], acts[1], m)
        _forward_from(weights, biases, acts, 2, m)
        _output_delta(acts[-1], labels, order, start, m, cost, deltas[-1])

        # Layers after the first, back to front; their columns are updated
        # right after they have given the error of the layer before.
        for l in range(n_layers - 1, 1, -1):
            _layer_back(weights[l], acts[l - 1], deltas[l], deltas[l - 1], m, c)
            _bias_update(biases[l], deltas[l], m, c)
        if n_layers > 1:
            _bias_update(biases[1], d1, m, c)

        rows = order[start : start + m]
        rows_next = order[start + m : start + m + batch_size]
        _first_layer_step(
            w0, b0, w1, acts[0], deltas[0], d1, x, rows, m, c, rows_next, parts
        )


@_jit
def _batch_gradients(weights, acts, deltas, grad_w, grad_b, xb, m):
    """Fill ``grad_w``/``grad_b`` with dC/dW, dC/db summed over the batch."""
    n_layers = len(weights)
    zero = xb.dtype.type(0)
    for l in range(n_layers - 1, -1, -1):
        gw, gb, d = grad_w[l], grad_b[l], deltas[l]
        for r in range(gw.shape[0]):
            gb[r] = zero
            for s in range(m):
                gb[r] += d[r, s]
            for k in range(gw.shape[1]):
                acc = zero
                for s in range(m):
                    a = xb[s, k] if l == 0 else acts[l - 1][k, s]
                    acc += d[r, s] * a
                gw[r, k] = acc
        if l > 0:
            # c = 0: the error of layer l - 1 without touching weights[l].
            _layer_back(weights[l], acts[l - 1], d, deltas[l - 1], m, zero)


class NumbaKernel(Kernel):
    """The whole epoch in ``@njit(parallel=True)`` code, split by hidden unit."""

    name = "numba"
    pool = "numba"

    def __init__(self):
        self.compile_seconds = None
        self.cache_hit = None

    def _buffers(self, net, batch_size):
        """Return typed lists of the parameters and the per-layer work arrays."""
        weights = numba.typed.List(net.weights)
        biases = numba.typed.List(net.biases)
        acts = numba.typed.List(
            [np.zeros((n, batch_size), net.dtype) for n in net.sizes[1:]]
        )
        deltas = numba.typed.List([np.zeros_like(a) for a in acts])
        return weights, biases, acts, deltas

    def train_epoch(self, net, x, y, order, batch_size, eta, cost):
        """Run one epoch in compiled code; see :meth:`Kernel.train_epoch`."""
        _check_arrays(net, x)
        weights, biases, acts, deltas = self._buffers(net, batch_size)
        order = np.ascontiguousarray(order, dtype=np.int64)
        labels = np.ascontiguousarray(y, dtype=np.int64)
        code = costs.CODES[costs.check(cost)]
        with _first_call_lock(("epoch", x.dtype)):
            _epoch(
                weights, biases, acts, deltas, x, labels, order,
                batch_size, float(eta), code,
            )  # fmt: skip

    def gradients(self, net, x, y, cost):
        """Return batch-mean gradients; see :meth:`Kernel.gradients`."""
        _check_arrays(net, x)
        m = len(x)
        weights, biases, acts, deltas = self._buffers(net, m)
        labels = np.ascontiguousarray(y, dtype=np.int64)
        order = np.arange(m, dtype=np.int64)
        xb = np.ascontiguousarray(x)
        code = costs.CODES[costs.check(cost)]
        grad_w = numba.typed.List([np.empty_like(w) for w in net.weights])
        grad_b = numba.typed.List([np.empty_like(b) for b in net.biases])
        with _first_call_lock(("gradients", x.dtype)):
            _first_forward(weights[0], biases[0], xb, order, acts[0], m)
            _forward_from(weights, biases, acts, 1, m)
            _output_delta(acts[-1], labels, order, 0, m, code, deltas[-1])
            _batch_gradients(weights, acts, deltas, grad_w, grad_b, xb, m)
        return [g / m for g in grad_w], [g / m for g in grad_b]

    def warm_up(self, net, x, y, cost, batch_size=10, n_samples=None):
        """Compile (or load from cache) for this dtype; return the seconds."""
        hits = _epoch.stats.cache_hits.copy()
        seconds = super().warm_up(net, x, y, cost, batch_size, n_samples)
        self.compile_seconds = seconds
        self.cache_hit = _epoch.stats.cache_hits != hits
        return seconds

    def info(self):
        """Return the kernel's runtime: threads, threading layer, compile time."""
        return {
            **super().info(),
            "numba_threads": numba.get_num_threads(),
            "threading_layer": threads.threading_layer(),
            "compile_seconds": self.compile_seconds,
            "cache_hit": self.cache_hit,
        }


def _check_arrays(net, x):
    """Raise ValueError unless ``x`` is a C-contiguous 2-D array of net's dtype."""
    if x.dtype != net.dtype or x.ndim != 2 or not x.flags.c_contiguous:
        raise ValueError(
            f"the numba kernel needs C-contiguous 2-D {net.dtype} samples, "
            f"got {x.dtype} with shape {x.shape}"
        )


_first_calls_done = set()


@contextlib.contextmanager
def _first_call_lock(key):
    """Hold a machine-wide file lock while this process first calls ``key``.

    The first call compiles, or loads Numba's on-disk cache. Numba's cache
    is not safe against two processes compiling the same parallel function
    at once: the loser of the race can leave an index and code from
    different compilations, which crash a later process that loads them.
    The lock makes concurrent first runs (a benchmark and the tests, say)
    take turns; later calls in the process skip it.
    """
    if key in _first_calls_done:
        yield
        return
    path = Path(tempfile.gettempdir()) / f"hmnist-numba-{os.getuid()}.lock"
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _first_calls_done.add(key)
