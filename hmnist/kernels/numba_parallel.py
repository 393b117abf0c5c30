"""The ``numba`` kernel: a whole epoch of mini-batch SGD in compiled code.

The equations are those of ``loop.py``. The first layer's outputs and
errors are kept sample by sample, ``a0[s, u]`` and ``d0[s, u]``; those of
the layers after it as ``(units, batch)`` arrays, ``A[l]`` and ``D[l]``
being the output and the error ``dC/dz`` of ``weights[l]``. A batch is
never copied: its samples are read as rows ``x[order[t]]`` of the
training array.

How the work is split across threads, and why. At the book's batch of 10
the matrices are thin ((100, 784) @ (784, 10)), too small for BLAS to
spread over cores, and a parallel region per matrix product costs more
than it saves. Here each thread owns a share of the first layer's hidden
units, whole groups of five, and with them their rows ``W0[j, :]``, their
bias and their columns ``W1[:, j]``. For its units a thread

1. takes their errors, ``D0 = (W1[:, share].T @ D1) * A0 (1 - A0)``, and
   steps their columns of ``W1`` (``_share_error``);
2. steps their rows of ``W0`` with the batch and, row by row while the
   row is still in cache, sends the *next* batch forward through the
   stepped rows (``_share_sweeps``);
3. adds up the next batch's sums, takes their sigmoid (``_share_outputs``)
   and their terms ``W1[:, j:j+5] A0[j:j+5]`` of layer 1's sums, a group
   at a time (``_share_partials``).

No thread writes what another reads but layer 1's sums, which are added
group after group in a fixed order, so there are no locks and the
weights do not depend on the number of threads. The sequence of updates
is exactly SGD's: batch ``t + 1`` goes forward only through weights that
batch ``t`` has stepped. What stays serial per batch is small: adding
the groups' terms, the layers after layer 1 and the output error.

Step 2 is nearly all of the work, two multiply-adds per weight and sample,
and it is written for the cache and the registers. The rows go in tiles
of columns (``tile_width``): for each tile, every group of five rows is
stepped with the batch and sends the next batch forward while the tile's
pixels of both batches, 24 kB at the book's batch, stay in L1, so that
the pixels come from L2 once per tile instead of once per group. Inside
a tile, samples go in fives and units in fives: a sweep along five rows
reads each of five samples' vectors once and keeps 25 vector sums (or 25
steps of the update) in registers, 10 loads per 25 multiply-adds. The
vectors are written out (``simd``) so that the sums stay in registers
from one tile to the next; Numba's own vectorising would add a vector's
lanes up at the end of every tile. The training array and ``W0`` start on
a cache line, so that no 64-byte load straddles two.

A net with one hidden layer, the book's, runs the whole epoch as one
parallel region (``_epoch_team``), with no fork and join a batch. Layer
1's sums go from thread to thread instead (``_chain_sums``): thread 0
adds its groups' terms to the bias, thread 1 waits for those sums
(``_await``: a counter per thread on its own cache line, read with
acquire and written with release ordering) and adds its own, and so on,
in the order one thread would add them. Every thread then runs layer 2
itself from the last thread's sums, which is less work than a second
wait: 100 numbers cross between the cores a batch, not the 1,000 of the
other share's terms. The team needs every thread to run at once; a team
that does not form (its threads run one after another, as inside another
parallel region) is found at a gate before any work, and the epoch then
runs a region a batch (``_epoch``), as deeper nets always do.

Each thread takes its views of the shared arrays once per epoch: taking a
view counts a reference with an atomic add on the array's header, and
threads that take views of one array every batch contend for that
header's cache line.

The batch after next is not yet in cache: its rows lie anywhere in the
training array. In each tile, each group prefetches a few cache lines of
every one of its rows, so that the loads are spread over the sweeps.

The sigmoid takes a whole vector at a time: Numba's ``exp`` is scalar
(the llvmlite wheels have no SVML), so ``simd.exp`` calls glibc's vector
``exp`` (libmvec): a sigmoid took 0.82 against 4.3 ns in float64 and
0.31 against 3.3 ns in float32. Every unit of the first layer takes that
path, wherever it sits in its share.

Units are padded to whole groups and samples to whole blocks of five:
the padding units' outputs are zero and the padding samples' steps are
zero, so that they change nothing; ``order`` carries five extra rows for
the blocks to read.

What it leaves out: NumPy's ``np.dot`` (it would call BLAS, whose threads
this kernel does not control), and any reordering of samples. Its blocks
are sized for AVX-512's 32 vector registers: with AVX2's 16 the 25 sums
spill to memory and the sweeps run slower than they could. The only
fast-math flags are ``reassoc`` and ``contract`` (sums may be vectorised
and fused multiply-adds used); results still agree with ``loop`` to the
rounding bounds the tests state.
"""

import contextlib
import fcntl
import os
import tempfile
from collections import namedtuple
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import atomics, costs, threads
from ..arrays import CACHE_LINE, aligned_zeros
from . import simd
from .base import Kernel

# Numba's first compilation imports SciPy's BLAS, when SciPy is installed,
# for its own np.dot. Loading it here, with the kernel and before any
# threads.limit, puts that second OpenBLAS under the limits as well:
# threadpoolctl reaches only the libraries already loaded.
with contextlib.suppress(ImportError):
    import scipy.linalg.cython_blas  # noqa: F401

_FLAGS = {"reassoc", "contract"}
# Below this many multiply-adds a layer runs serially: a parallel region
# costs a few microseconds, about what 20,000 multiply-adds take.
_PARALLEL_MIN_WORK = 20_000
# Hidden units of the first layer go to threads in groups of this many,
# and samples go through a sweep in blocks of this many.
GROUP = 5
# The bytes of L1 cache a tile's pixels may fill: those of the batch and
# of the next, over the tile's columns. L1 holds 32 to 48 kB of data.
TILE_BYTES = 24 * 1024
# A tile row shorter than MIN_TILE_BYTES spends too much of its work on
# loading and storing its sums: with batches too large for TILE_BYTES at
# that width, the pixels stay in L2 anyway, and tiles are LONG_TILE_BYTES.
MIN_TILE_BYTES = 1024
LONG_TILE_BYTES = 2048

_jit = njit(cache=True, fastmath=_FLAGS)
_jit_parallel = njit(cache=True, fastmath=_FLAGS, parallel=True)
# For the blocks of a sweep, inlined into the loop over a tile's groups:
# called, the kernel took 1.06x the time (paired epochs, 2 threads).
_jit_inline = njit(cache=True, fastmath=_FLAGS, inline="always")


@intrinsic
def _prefetch(typingctx, a, i, k):
    """Ask the CPU to bring the cache line of ``a[i, k]`` into L2, not waiting."""

    def codegen(context, builder, signature, args):
        a_type = signature.args[0]
        array = context.make_array(a_type)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, a_type, array, args[1:])
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]),
            "llvm.prefetch.p0",
        )
        # read, locality 2 (L2 and outward), data cache
        builder.call(fn, [builder.bitcast(ptr, byte_ptr), i32(0), i32(2), i32(1)])
        return context.get_dummy_value()

    return types.void(a, i, k), codegen


@_jit
def _sigmoid(z):
    """Return the logistic function of a scalar ``z``."""
    return 1.0 / (1.0 + np.exp(-z))


@_jit
def _sigmoid_vector(z):
    """Return the logistic function of each lane of the vector ``z``."""
    return 1 / (1 + simd.exp(-z))


@_jit
def _sigmoid_run(v, start, stop):
    """Replace ``v[start:stop]`` of a 1-D array by its sigmoid, a vector at a time."""
    lanes = simd.lanes(v.dtype)
    i = start
    while i + lanes <= stop:
        simd.store(_sigmoid_vector(simd.load(v, i)), v, i)
        i += lanes
    for t in range(i, stop):
        v[t] = _sigmoid(v[t])


@_jit
def _sigmoid_rows(a, first, stop, m):
    """Replace ``a[first:stop, :m]`` by its sigmoid; ``a`` is C-contiguous."""
    flat = a.reshape(a.size)
    width = a.shape[1]
    if m == width:
        # Whole rows: one contiguous run.
        _sigmoid_run(flat, first * width, stop * width)
        return
    for r in range(first, stop):
        _sigmoid_run(flat, r * width, r * width + m)


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
    _sigmoid_rows(a_out, i, i + 1, m)


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
        a0[j, s] = z
    _sigmoid_rows(a0, j, j + 1, m)


@_jit_parallel
def _first_forward(w0, b0, x, rows, a0, m):
    """Forward samples ``x[rows[:m]]`` through the first layer, units over threads."""
    for j in prange(w0.shape[0]):
        _first_unit_forward(w0, b0, x, rows, a0, j, m)


@_jit
def _output_delta(a, labels, start, m, cost, delta, first):
    """Set ``delta[:, :m]`` to the output error dC/dz (cost 0 quadratic, 1 CE).

    Row ``i`` of ``a`` and ``delta`` is output unit ``first + i``.
    ``labels`` are in the epoch's order, so a batch's are read in sequence.
    """
    one = a.dtype.type(1)
    for s in range(m):
        label = labels[start + s]
        for i in range(a.shape[0]):
            target = one if first + i == label else one - one
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
def _take5(v, i):
    """Return ``v[i]`` to ``v[i + 4]`` as a tuple, which lives in registers."""
    return v[i], v[i + 1], v[i + 2], v[i + 3], v[i + 4]


@_jit
def _dot5(p, q):
    """Return the dot product of two 5-tuples."""
    return p[0] * q[0] + p[1] * q[1] + p[2] * q[2] + p[3] * q[3] + p[4] * q[4]


@_jit
def _axpy5(z, u, q):
    """Return the 5-tuple ``z + u * q``."""
    return (
        z[0] + u * q[0], z[1] + u * q[1], z[2] + u * q[2],
        z[3] + u * q[3], z[4] + u * q[4],
    )  # fmt: skip


@_jit
def _fold_partials(parts, g0, g1, sums, m):
    """Add the groups' terms ``parts[g0:g1, :, :m]`` to ``sums[:, :m]``, in order."""
    for g in range(g0, g1):
        for i in range(parts.shape[1]):
            for s in range(m):
                sums[i, s] += parts[g, i, s]


@_jit
def _sum_partials(parts, b1, a1, m):
    """Set ``a1[:, :m]`` to the sigmoid of ``b1`` plus every group's terms."""
    for i in range(a1.shape[0]):
        for s in range(m):
            a1[i, s] = b1[i]
    _fold_partials(parts, 0, parts.shape[0], a1, m)
    _sigmoid_rows(a1, 0, a1.shape[0], m)


@_jit
def _forward_from(weights, biases, acts, first, m):
    """Forward the batch from ``acts[first - 1]`` to the last layer."""
    for l in range(first, len(weights)):
        _layer_forward(weights[l], biases[l], acts[l - 1], acts[l], m)


# ----------------------------------------------------------------------------
# The first layer, a share of its units per thread

# The first layer's state for an epoch (``_first_layer``). ``w0`` is a copy
# of the layer's weights padded with zero units to whole groups, starting
# on a cache line; each share steps its own rows of it. The rest holds a
# block per share ``t``, each on cache lines of its own, so that no two
# threads write to one line: ``b0[t]`` ``(width,)`` the share's biases;
# ``w1[t]`` ``(n_1, width)`` its columns of the next layer's weights (no
# rows without one); ``a0[t]``, ``d0[t]`` ``(batch, width)`` its units'
# outputs and errors, sample by sample, and ``a0t[t]`` the outputs unit
# by unit, ``(width, batch)`` with ``batch`` rounded up to whole vectors;
# ``acc[t]`` ``(units, batch, lanes)`` their vector sums. ``width`` is
# the share's units rounded up to whole vectors and ``batch`` the batch's
# samples to whole blocks of five, the padding zero. ``n_units`` is the
# layer's width.
FirstLayer = namedtuple("FirstLayer", "w0 b0 w1 a0 a0t d0 acc n_units")

# Share ``t`` of a FirstLayer: views of its blocks, its first unit ``j0``
# and its number of units ``n``, whole groups.
Share = namedtuple("Share", "b0 w1 a0 a0t d0 acc j0 n")


@_jit
def _share_groups(n_groups, t, n_shares):
    """Return the first group and the stop of share ``t`` of ``n_shares``."""
    return t * n_groups // n_shares, (t + 1) * n_groups // n_shares


@_jit
def _share(layer, t, n_shares):
    """Return share ``t`` of ``n_shares`` of the FirstLayer ``layer``."""
    g0, g1 = _share_groups(layer.w0.shape[0] // GROUP, t, n_shares)
    return Share(
        layer.b0[t], layer.w1[t], layer.a0[t], layer.a0t[t], layer.d0[t], layer.acc[t],
        GROUP * g0, GROUP * (g1 - g0),
    )  # fmt: skip


@_jit
def _row5(a, i, j):
    """Return ``a[i, j]`` to ``a[i, j + 4]`` as a tuple."""
    return a[i, j], a[i, j + 1], a[i, j + 2], a[i, j + 3], a[i, j + 4]


@_jit
def _load5(x, r, k):
    """Return the vectors at column ``k`` of rows ``x[r[0]]`` to ``x[r[4]]``."""
    return (
        simd.load(x, r[0], k), simd.load(x, r[1], k), simd.load(x, r[2], k),
        simd.load(x, r[3], k), simd.load(x, r[4], k),
    )  # fmt: skip


@_jit
def _steps5(c, d0, s, u, like):
    """Return unit ``u``'s steps ``c * d0[s:s+5, u]``, each in every lane."""
    return (
        simd.splat(c * d0[s, u], like), simd.splat(c * d0[s + 1, u], like),
        simd.splat(c * d0[s + 2, u], like), simd.splat(c * d0[s + 3, u], like),
        simd.splat(c * d0[s + 4, u], like),
    )  # fmt: skip


@_jit
def _minus_dot5(w, p, q):
    """Return ``w - p[0] q[0] - ... - p[4] q[4]``, one multiply-add after another."""
    return w - p[0] * q[0] - p[1] * q[1] - p[2] * q[2] - p[3] * q[3] - p[4] * q[4]


@_jit
def _sums5(acc, u, s, k0):
    """Return unit ``u``'s vector sums of samples ``s`` to ``s + 4``, zeros at first."""
    if k0 == 0:
        zero = simd.splat(0, acc)
        return zero, zero, zero, zero, zero
    return (
        simd.load(acc, u, s, 0), simd.load(acc, u, s + 1, 0),
        simd.load(acc, u, s + 2, 0), simd.load(acc, u, s + 3, 0),
        simd.load(acc, u, s + 4, 0),
    )  # fmt: skip


@_jit
def _store_sums5(acc, u, s, z):
    """Store unit ``u``'s vector sums ``z`` of samples ``s`` to ``s + 4``."""
    for i in range(GROUP):
        simd.store(z[i], acc, u, s + i, 0)


@_jit_inline
def _update_block(w0, x, r, d0, c, j, u, s, k0, k1):
    """Step rows ``w0[j:j+5]``, columns ``k0:k1``, with the samples ``x[r]``.

    ``w0[j + v, k] -= sum_i c d0[s + i, u + v] x[r[i], k]``, ``r`` five row
    indices: the 25 steps held in registers, a sweep along the five rows
    reads each sample's vector once, 10 loads and 5 stores per 25
    multiply-adds.
    """
    lanes = simd.lanes(w0.dtype)
    # p0[i] is unit u's step for sample s + i, and so on.
    p0, p1 = _steps5(c, d0, s, u, w0), _steps5(c, d0, s, u + 1, w0)
    p2, p3 = _steps5(c, d0, s, u + 2, w0), _steps5(c, d0, s, u + 3, w0)
    p4 = _steps5(c, d0, s, u + 4, w0)
    for k in range(k0, k1, lanes):
        xk = _load5(x, r, k)
        simd.store(_minus_dot5(simd.load(w0, j, k), p0, xk), w0, j, k)
        simd.store(_minus_dot5(simd.load(w0, j + 1, k), p1, xk), w0, j + 1, k)
        simd.store(_minus_dot5(simd.load(w0, j + 2, k), p2, xk), w0, j + 2, k)
        simd.store(_minus_dot5(simd.load(w0, j + 3, k), p3, xk), w0, j + 3, k)
        simd.store(_minus_dot5(simd.load(w0, j + 4, k), p4, xk), w0, j + 4, k)


@_jit_inline
def _forward_block(w0, x, r, acc, j, u, s, k0, k1):
    """Add columns ``k0:k1`` of rows ``w0[j:j+5]`` times ``x[r]`` to ``acc``.

    ``acc[u + v, s + i]`` gathers ``w0[j + v, k] x[r[i], k]`` lane by
    lane: 25 vector sums in registers, 10 loads per 25 multiply-adds.
    """
    lanes = simd.lanes(w0.dtype)
    # z0[i] is unit u's sum for sample s + i, and so on.
    z0, z1 = _sums5(acc, u, s, k0), _sums5(acc, u + 1, s, k0)
    z2, z3 = _sums5(acc, u + 2, s, k0), _sums5(acc, u + 3, s, k0)
    z4 = _sums5(acc, u + 4, s, k0)
    for k in range(k0, k1, lanes):
        xk = _load5(x, r, k)
        z0 = _axpy5(z0, simd.load(w0, j, k), xk)
        z1 = _axpy5(z1, simd.load(w0, j + 1, k), xk)
        z2 = _axpy5(z2, simd.load(w0, j + 2, k), xk)
        z3 = _axpy5(z3, simd.load(w0, j + 3, k), xk)
        z4 = _axpy5(z4, simd.load(w0, j + 4, k), xk)
    for v, z in enumerate((z0, z1, z2, z3, z4)):
        _store_sums5(acc, u + v, s, z)


@_jit
def _prefetch_tile(x, order, first, m, part, n_parts, k0, k1):
    """Prefetch part ``part`` of ``n_parts`` of columns ``k0:k1`` of ``m`` samples.

    Sample ``i`` is row ``x[order[first + i]]``; the tile's cache lines are
    cut into ``n_parts`` runs, and run ``part`` of every sample's row is
    prefetched, a few lines of each row rather than many of one.
    """
    per_line = 64 // x.itemsize
    n_lines = (k1 - k0 + per_line - 1) // per_line
    per_part = (n_lines + n_parts - 1) // n_parts
    start = k0 + part * per_part * per_line
    stop = min(start + per_part * per_line, k1)
    for i in range(m):
        row = order[first + i]
        for k in range(start, stop, per_line):
            _prefetch(x, row, k)


@_jit
def _share_sweeps(w0, x, order, start, m, d0, c, m_next, m_after, acc, j0, n, kt):
    """Step rows ``w0[j0:j0+n]`` with the batch, then sum them for the next.

    The batch is samples ``start`` to ``start + m`` of ``order``, the next
    the ``m_next`` after them and the batch after that ``m_after`` more.
    Tile by tile of ``kt`` columns, each group of five rows is stepped
    with the batch and goes forward for the next batch while the tile's
    pixels of both batches stay in L1 (``TILE_BYTES``), and prefetches
    its part of the tile of the batch after. The columns past the last
    whole vector are stepped at the end and summed in ``_share_outputs``.
    """
    n_in = w0.shape[1]
    n_vec = n_in - n_in % simd.lanes(w0.dtype)
    after = start + m + m_next
    for k0 in range(0, n_vec, kt):
        k1 = min(k0 + kt, n_vec)
        for u in range(0, n, GROUP):
            for s in range(0, _round_up(m, GROUP), GROUP):
                r = _take5(order, start + s)
                _update_block(w0, x, r, d0, c, j0 + u, u, s, k0, k1)
            for s in range(0, _round_up(m_next, GROUP), GROUP):
                r = _take5(order, start + m + s)
                _forward_block(w0, x, r, acc, j0 + u, u, s, k0, k1)
            _prefetch_tile(x, order, after, m_after, u // GROUP, n // GROUP, k0, k1)
    for s in range(m):
        row = order[start + s]
        for u in range(n):
            step = c * d0[s, u]
            for k in range(n_vec, n_in):
                w0[j0 + u, k] -= step * x[row, k]


@_jit
def _sigmoid_vectors(a, s):
    """Replace row ``a[s]`` by its sigmoid, vector by vector; rows are whole vectors."""
    for u in range(0, a.shape[1], simd.lanes(a.dtype)):
        simd.store(_sigmoid_vector(simd.load(a, s, u)), a, s, u)


@_jit
def _share_outputs(w0, b0, x, order, first, m, acc, a0, a0t, j0, n, n_units):
    """Set ``a0[:m]``, the share's outputs for samples ``first`` on of ``order``.

    Each sum is the bias, the sum of its vector's lanes from
    ``_share_sweeps`` and the columns past the last whole vector. Every
    unit's sigmoid takes the vector path, whatever its place in the
    share, so that results do not depend on how units are shared; the
    padding units' outputs are zero. ``a0t`` gets them unit by unit.
    """
    n_in = w0.shape[1]
    n_vec = n_in - n_in % simd.lanes(w0.dtype)
    n_real = min(n, n_units - j0)
    for s in range(m):
        row = order[first + s]
        for u in range(n_real):
            z = b0[u]
            if n_vec > 0:
                z += simd.hsum(simd.load(acc, u, s, 0))
            for k in range(n_vec, n_in):
                z += w0[j0 + u, k] * x[row, k]
            a0[s, u] = z
        _sigmoid_vectors(a0, s)
        for u in range(n_real, a0.shape[1]):
            a0[s, u] = 0
        for u in range(n):
            a0t[u, s] = a0[s, u]


@_jit
def _share_error(w1, d1, a0, d0, m, c):
    """Set ``d0[:m]`` from the share's columns ``w1`` of the next layer, then step them.

    The error is ``(d1[:, :m].T @ w1) * a0 (1 - a0)``, shapes ``(m, n_1) @
    (n_1, width)``, and the columns' step ``c d1[:, :m] @ a0[:m]``, shapes
    ``(n_1, m) @ (m, width)``, a vector of units at a time. The step comes
    after the error, which needs the columns as they were.
    """
    lanes = simd.lanes(a0.dtype)
    for s in range(m):
        for u in range(0, a0.shape[1], lanes):
            e = simd.splat(0, a0)
            for r in range(w1.shape[0]):
                e = e + simd.load(w1, r, u) * d1[r, s]
            a = simd.load(a0, s, u)
            simd.store(e * a * (1 - a), d0, s, u)
    for r in range(w1.shape[0]):
        for u in range(0, a0.shape[1], lanes):
            grad = simd.splat(0, a0)
            for s in range(m):
                grad = grad + simd.load(a0, s, u) * d1[r, s]
            simd.store(simd.load(w1, r, u) - c * grad, w1, r, u)


@_jit
def _share_bias_step(b0, d0, m, c):
    """Step the share's biases by ``c`` times the batch's summed errors, ``d0[:m]``."""
    for u in range(0, b0.shape[0], simd.lanes(b0.dtype)):
        total = simd.load(d0, 0, u)
        for s in range(1, m):
            total = total + simd.load(d0, s, u)
        simd.store(simd.load(b0, u) - c * total, b0, u)


@_jit
def _share_partials(w1, a0t, parts, g0, n, m):
    """Set ``parts[g, :, :m]`` for the share's groups ``g``, from ``g0`` on.

    ``parts[g0 + h] = w1[:, u:u+5] @ a0t[u:u+5, :m]`` for the share's
    group ``h`` (units ``u = 5 h``), shapes ``(n_1, 5) @ (5, m)``: group
    ``g0 + h``'s share of layer 1's sums, a vector of samples at a time.
    """
    lanes = simd.lanes(a0t.dtype)
    for h in range(n // GROUP):
        u = GROUP * h
        for s in range(0, m, lanes):
            a = _load5(a0t, (u, u + 1, u + 2, u + 3, u + 4), s)
            for i in range(w1.shape[0]):
                simd.store(_dot5(_row5(w1, i, u), a), parts, g0 + h, i, s)


@_jit
def _share_step(
    share, w0, x, labels, order, start, m, m_next, c, cost, d1, parts, kt, n_units
):
    """Finish the batch at ``start`` and start the next, for one share.

    For the share's units: their errors (from ``d1`` and ``w1``, or as the
    output layer's), the step of their columns of ``w1``, of ``b0`` and of
    their rows of ``w0`` with the batch's ``m`` samples, the next batch's
    ``m_next`` samples forward through the stepped rows, and the groups'
    terms of its sums in layer 1, into ``parts``. With ``m = 0`` the
    share only goes forward. ``order`` holds the epoch's sample order and
    GROUP more rows, so that blocks of five samples always find rows to
    read; the steps of the samples past ``m`` are zero.
    """
    b0, w1, a0, a0t, d0, acc, j0, n = share
    if m > 0:
        if w1.shape[0] > 0:
            _share_error(w1, d1, a0, d0, m, c)
        else:
            _output_delta(a0.T, labels, start, m, cost, d0.T, j0)
        for s in range(m, d0.shape[0]):
            for u in range(d0.shape[1]):
                d0[s, u] = 0
        _share_bias_step(b0, d0, m, c)
    m_after = min(m_next, order.shape[0] - GROUP - start - m - m_next)
    _share_sweeps(w0, x, order, start, m, d0, c, m_next, m_after, acc, j0, n, kt)
    m_rows = _round_up(m_next, GROUP)
    _share_outputs(w0, b0, x, order, start + m, m_rows, acc, a0, a0t, j0, n, n_units)
    if w1.shape[0] > 0:
        _share_partials(w1, a0t, parts, j0 // GROUP, n, m_next)


@_jit_parallel
def _first_layer_step(
    layer, n_shares, x, labels, order, start, m, m_next, c, cost, d1, parts, kt
):
    """Run ``_share_step`` for every share, shares over threads."""
    for t in prange(n_shares):
        _share_step(
            _share(layer, t, n_shares), layer.w0, x, labels, order, start, m,
            m_next, c, cost, d1, parts, kt, layer.n_units,
        )  # fmt: skip


@_jit
def _batch_head(weights, biases, acts, deltas, labels, parts, start, m, cost, c):
    """Run the serial part of the batch at ``start``, up to layer 1's error.

    That is: layer 1's sums from the groups' terms ``parts``, the layers
    after it, the output error, and back to front the error, columns and
    bias of every layer after the first; ``c`` is ``eta / m``.
    A net with no hidden layer has none of it: its output error is the
    first layer's, which ``_share_step`` takes.
    """
    n_layers = len(weights)
    if n_layers == 1:
        return
    _sum_partials(parts, biases[1], acts[1], m)
    _forward_from(weights, biases, acts, 2, m)
    _output_delta(acts[-1], labels, start, m, cost, deltas[-1], 0)
    # Layers after the first, back to front; their columns are updated
    # right after they have given the error of the layer before.
    for l in range(n_layers - 1, 1, -1):
        _layer_back(weights[l], acts[l - 1], deltas[l], deltas[l - 1], m, c)
        _bias_update(biases[l], deltas[l], m, c)
    _bias_update(biases[1], deltas[1], m, c)


@_jit
def _epoch(
    layer, weights, biases, acts, deltas, x, labels, order, n, batch_size, eta, cost,
    parts, n_shares, kt,
):  # fmt: skip
    """Run every mini-batch of one epoch, a parallel region a batch.

    ``layer`` is the FirstLayer of ``n_shares`` shares; ``weights`` and
    the rest are typed lists of the net's layers (the first two layers'
    parameters only in ``layer``) and of their work arrays. ``order``
    holds the epoch's ``n`` sample indices and GROUP more; ``labels[t]``
    is the label of ``x[order[t]]``. ``parts`` holds the groups' terms of
    layer 1's sums. See NumbaKernel.train_epoch.
    """
    d1 = deltas[1] if len(weights) > 1 else deltas[0]
    zero = x.dtype.type(0)
    m = min(batch_size, n)
    _first_layer_step(
        layer, n_shares, x, labels, order, 0, 0, m, zero, cost, d1, parts, kt
    )
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        m_next = min(batch_size, n - start - m)
        c = x.dtype.type(eta / m)
        _batch_head(weights, biases, acts, deltas, labels, parts, start, m, cost, c)
        _first_layer_step(
            layer, n_shares, x, labels, order, start, m, m_next, c, cost, d1, parts, kt
        )


# A team's int64 sync array (``_team_sync``): thread t's count of steps
# done in slot _LINE * (t + 1), then the gate's count. The slots are 64 bytes
# apart and away from the array's ends, so that none shares a cache line
# with another or with other data.
_LINE = 8
# Added to the gate's count when a thread gives up waiting for the team.
_CLOSED = 1 << 40
# A wait at the gate this long (about a quarter of a second here, with
# the CPU's pause between reads) is taken as the team never forming.
GATE_SPINS = 10_000_000


def _team_sync(n_team):
    """Return the zeroed sync array of a team of ``n_team`` threads."""
    return np.zeros(_LINE * (n_team + 2), np.int64)


@_jit
def _gate(n_team):
    """Return the index of the gate's count in a team's sync array."""
    return _LINE * (n_team + 1)


@_jit
def _pass_gate(sync, n_team, max_spins):
    """Arrive at the team's gate; return True once all ``n_team`` threads have.

    A thread that has spun ``max_spins`` times closes the gate, and then
    every thread of the team, there or still to come, returns False: the
    team works all together or not at all.
    """
    gate = _gate(n_team)
    if atomics.fetch_add(sync, gate, 1) >= _CLOSED:
        return False
    spins = 0
    while True:
        count = atomics.load(sync, gate)
        if count >= _CLOSED:
            return False
        if count == n_team:
            return True
        spins += 1
        if spins > max_spins and atomics.compare_exchange(
            sync, gate, count, count + _CLOSED
        ):
            return False
        atomics.pause()


@_jit
def _signal(sync, t, k):
    """Say that thread ``t`` has done step ``k``."""
    atomics.store(sync, _LINE * (t + 1), k)


@_jit
def _await(sync, t, k):
    """Spin until thread ``t`` has done step ``k``."""
    while atomics.load(sync, _LINE * (t + 1)) < k:
        atomics.pause()


@_jit
def _chain_sums(sync, t, k, b1, before, mine, parts, g0, g1, m):
    """Add share ``t``'s groups' terms to layer 1's running sums, in turn.

    Thread 0 starts from the bias ``b1``; thread ``t > 0`` waits for
    thread ``t - 1``'s sums of step ``k``, ``before``, and starts from
    them. Each adds its groups ``g0:g1`` of ``parts`` into ``mine`` and
    says it is done. The last thread's sums are layer 1's whole sums,
    added group after group as on one thread.
    """
    if t > 0:
        _await(sync, t - 1, k)
    for i in range(mine.shape[0]):
        for s in range(m):
            mine[i, s] = before[i, s] if t > 0 else b1[i]
    _fold_partials(parts, g0, g1, mine, m)
    _signal(sync, t, k)


@_jit_parallel
def _epoch_team(
    layer, b1, x, labels, order, n, batch_size, eta, cost, parts, n_team, sync,
    max_spins, kt, sums,
):  # fmt: skip
    """Run an epoch of a net with one hidden layer in one parallel region.

    The same work as ``_epoch``, in the same order, by a team of
    ``n_team`` threads. Thread ``t`` takes share ``t`` of the first
    layer's units. Layer 1's sums go from thread to thread
    (``_chain_sums``), each adding its groups' terms, in place of a
    barrier: ``sums[t]`` holds thread ``t``'s running sums, 100 numbers
    at the book's sizes, where a barrier and the other share's terms
    would move 1,000 between the cores. Every thread then runs layer 2
    itself from the last thread's sums, on its own copy of ``b1``,
    stepped alike; thread 0's goes back into ``b1`` at the end. ``sync`` is
    ``_team_sync(n_team)``. If the team did not form (``_pass_gate``),
    nothing is changed and ``sync[_gate(n_team)]`` is at least
    ``_CLOSED``.
    """
    zero = x.dtype.type(0)
    for t in prange(n_team):
        if not _pass_gate(sync, n_team, max_spins):
            continue
        # This thread's views, made once: a view's reference count is an
        # atomic that every thread taking one would contend for.
        share, w0, n_units = _share(layer, t, n_team), layer.w0, layer.n_units
        g0, g1 = share.j0 // GROUP, (share.j0 + share.n) // GROUP
        before, mine, last = sums[max(t - 1, 0)], sums[t], sums[n_team - 1]
        b1_own = b1.copy()
        a1 = np.empty((b1.shape[0], batch_size), x.dtype)
        d1 = np.empty_like(a1)
        m = min(batch_size, n)
        _share_step(
            share, w0, x, labels, order, 0, 0, m, zero, cost, d1, parts, kt, n_units
        )
        _chain_sums(sync, t, 1, b1_own, before, mine, parts, g0, g1, m)
        for start in range(0, n, batch_size):
            k = start // batch_size + 1
            m = min(batch_size, n - start)
            m_next = min(batch_size, n - start - m)
            c = x.dtype.type(eta / m)
            # _batch_head for one hidden layer, on this thread's b1.
            _await(sync, n_team - 1, k)
            for i in range(a1.shape[0]):
                for s in range(m):
                    a1[i, s] = last[i, s]
            _sigmoid_rows(a1, 0, a1.shape[0], m)
            _output_delta(a1, labels, start, m, cost, d1, 0)
            _bias_update(b1_own, d1, m, c)
            _share_step(
                share, w0, x, labels, order, start, m, m_next, c, cost, d1,
                parts, kt, n_units,
            )  # fmt: skip
            _chain_sums(sync, t, k + 1, b1_own, before, mine, parts, g0, g1, m_next)
        if t == 0:
            b1[:] = b1_own


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


def tile_width(n_in, batch_size, dtype):
    """Return the columns of a tile, whole vectors.

    As many as keep the tile's pixels of two batches in ``TILE_BYTES``;
    where that is less than ``MIN_TILE_BYTES`` of a row, ``LONG_TILE_BYTES``.
    Measured at batch 100, [784,100,10], tiles of 2 kB took 0.95x the time
    of tiles of 1 kB on 1 thread, 0.96x to 0.99x on 2.
    """
    itemsize, lanes = np.dtype(dtype).itemsize, simd.lanes(dtype)
    rows = 2 * _round_up(batch_size, GROUP)
    columns = TILE_BYTES // (rows * itemsize)
    if columns * itemsize < MIN_TILE_BYTES:
        columns = LONG_TILE_BYTES // itemsize
    return min(columns // lanes, max(n_in // lanes, 1)) * lanes


def _first_layer(net, batch_size, n_shares):
    """Return the FirstLayer state of ``net`` for an epoch of ``n_shares`` shares."""
    n_units, dtype = net.sizes[1], net.dtype
    n_groups = _round_up(n_units, GROUP) // GROUP
    w0 = aligned_zeros((GROUP * n_groups, net.sizes[0]), dtype)
    w0[:n_units] = net.weights[0]
    lanes = simd.lanes(dtype)
    share = GROUP * (_round_up(n_groups, n_shares) // n_shares)
    width = _round_up(share, lanes)
    n_next = net.sizes[2] if len(net.sizes) > 2 else 0
    b0 = aligned_zeros((n_shares, width), dtype)
    w1 = aligned_zeros((n_shares, n_next, width), dtype)
    for t, (j0, j1) in enumerate(_share_units(n_units, n_shares)):
        b0[t, : j1 - j0] = net.biases[0][j0:j1]
        if n_next:
            w1[t, :, : j1 - j0] = net.weights[1][:, j0:j1]
    batch = _round_up(batch_size, GROUP)
    a0 = aligned_zeros((n_shares, batch, width), dtype)
    a0t = aligned_zeros((n_shares, width, _round_up(batch, lanes)), dtype)
    d0 = aligned_zeros((n_shares, batch, width), dtype)
    acc = aligned_zeros((n_shares, share, batch, lanes), dtype)
    return FirstLayer(w0, b0, w1, a0, a0t, d0, acc, n_units)


def _share_units(n_units, n_shares):
    """Return each share's first unit and stop among ``n_units`` units."""
    n_groups = _round_up(n_units, GROUP) // GROUP
    bounds = [_share_groups(n_groups, t, n_shares) for t in range(n_shares)]
    return [(GROUP * g0, min(GROUP * g1, n_units)) for g0, g1 in bounds]


def _line_blocks(n_blocks, n_next, batch_size, dtype):
    """Return ``n_blocks`` zero ``(n_next, batch)`` blocks, rows of whole lines.

    ``batch`` is ``batch_size`` rounded up to a cache line of numbers, a
    vector: the groups' terms of layer 1's sums and the team's running
    sums go a vector of samples at a time, and no thread's block shares
    a cache line with another's.
    """
    per_line = CACHE_LINE // np.dtype(dtype).itemsize
    return aligned_zeros((n_blocks, n_next, _round_up(batch_size, per_line)), dtype)


@_jit
def _round_up(n, step):
    """Return ``n`` rounded up to a multiple of ``step``."""
    return (n + step - 1) // step * step


def _store_first_layer(net, layer):
    """Copy the first layer's stepped parameters back into ``net``."""
    n_shares = len(layer.b0)
    net.weights[0][...] = layer.w0[: layer.n_units]
    for t, (j0, j1) in enumerate(_share_units(layer.n_units, n_shares)):
        net.biases[0][j0:j1] = layer.b0[t, : j1 - j0]
        if len(net.weights) > 1:
            net.weights[1][:, j0:j1] = layer.w1[t, :, : j1 - j0]


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
        self._train(net, x, y, order, batch_size, eta, cost, team=len(net.weights) == 2)

    def _train(self, net, x, y, order, batch_size, eta, cost, team):
        """Run one epoch: one team of threads if ``team``, else a region a batch.

        A team needs a net with one hidden layer; one that does not form
        (its threads did not all run at once, as when this is called
        inside another parallel region) changes nothing, and a region a
        batch does the epoch instead.
        """
        _check_arrays(net, x)
        code = costs.CODES[costs.check(cost)]
        n = len(order)
        if n == 0:
            return
        order = np.asarray(order, dtype=np.int64)
        labels = np.ascontiguousarray(y[order], dtype=np.int64)
        # GROUP rows more, so that blocks of five samples always find rows.
        order = np.concatenate([order, np.full(GROUP, order[-1])])
        n_shares = numba.get_num_threads()
        layer = _first_layer(net, batch_size, n_shares)
        n_groups, n_next = len(layer.w0) // GROUP, layer.w1.shape[1]
        parts = _line_blocks(n_groups, n_next, batch_size, net.dtype)
        args = x, labels, order, n, batch_size, float(eta), code, parts
        kt = tile_width(x.shape[1], batch_size, x.dtype)
        if team:
            sync = _team_sync(n_shares)
            with _first_call_lock(("epoch_team", x.dtype)):
                _epoch_team(
                    layer, net.biases[1], *args, n_shares, sync, GATE_SPINS, kt,
                    _line_blocks(n_shares, n_next, batch_size, net.dtype),
                )  # fmt: skip
            if sync[_gate(n_shares)] == n_shares:
                _store_first_layer(net, layer)
                return
        weights, biases, acts, deltas = self._buffers(net, batch_size)
        with _first_call_lock(("epoch", x.dtype)):
            _epoch(layer, weights, biases, acts, deltas, *args, n_shares, kt)
        _store_first_layer(net, layer)

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
            _output_delta(acts[-1], labels, 0, m, code, deltas[-1], 0)
            _batch_gradients(weights, acts, deltas, grad_w, grad_b, xb, m)
        return [g / m for g in grad_w], [g / m for g in grad_b]

    def warm_up(self, net, x, y, cost, batch_size=10, n_samples=None):
        """Compile (or load from cache) for this dtype; return the seconds."""
        epoch = _epoch_team if len(net.weights) == 2 else _epoch
        hits = epoch.stats.cache_hits.copy()
        seconds = super().warm_up(net, x, y, cost, batch_size, n_samples)
        self.compile_seconds = seconds
        self.cache_hit = epoch.stats.cache_hits != hits
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
