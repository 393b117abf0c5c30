"""Every core kernel against finite differences, the loop kernel and itself.

Relative errors here are norm-wise: ``max|got - want| / max|want|`` over a
whole parameter list, so that a weight that happens to be near zero does
not turn rounding into a large elementwise ratio.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import SMALL_EPOCHS, make_batch, rel_diff

from hmnist import costs, kernels, threads
from hmnist.network import Network

CORE = ("loop", "matmul", "numba")
COSTS = ("quadratic", "cross-entropy")


def numeric_gradients(net, x, y, cost, h=1e-5):
    """Return central-difference dC/dW, dC/db of the batch-mean cost."""
    grads = []
    for p in net.weights + net.biases:
        g = np.empty_like(p)
        for i in np.ndindex(p.shape):
            keep = p[i]
            p[i] = keep + h
            up = costs.value(cost, net.feedforward(x), y)
            p[i] = keep - h
            down = costs.value(cost, net.feedforward(x), y)
            p[i] = keep
            g[i] = (up - down) / (2 * h)
        grads.append(g)
    return grads[: net.n_layers], grads[net.n_layers :]


def reference_epoch(net, x, y, order, batch_size, eta, cost):
    """Run one SGD epoch from the loop kernel's (finite-difference checked)
    gradients: ``w -= eta * mean over the batch``, the last batch smaller."""
    loop = kernels.get("loop")
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        grad_w, grad_b = loop.gradients(net, x[batch], y[batch], cost)
        for w, b, gw, gb in zip(net.weights, net.biases, grad_w, grad_b):
            w -= eta * gw
            b -= eta * gb


# ----------------------------------------------------------------------------
# Registry


def test_names_lists_the_core_kernels():
    assert set(CORE) <= set(kernels.names())


def test_unknown_kernel():
    with pytest.raises(ValueError, match="nope"):
        kernels.get("nope")


@pytest.mark.parametrize("name", CORE)
def test_get_returns_the_named_kernel(name):
    kernel = kernels.get(name)
    assert kernel.name == name
    assert kernels.get(name) is kernel


# ----------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("sizes", [[12, 7, 5], [12, 6, 5, 4], [12, 5]])
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("name", CORE)
def test_gradients_match_central_differences(name, cost, sizes):
    net = Network(sizes, seed=1)
    x, y = make_batch(8, sizes[0], sizes[-1], seed=2)
    numeric_w, numeric_b = numeric_gradients(net, x, y, cost)

    grad_w, grad_b = kernels.get(name).gradients(net, x, y, cost)

    assert [g.shape for g in grad_w] == [w.shape for w in net.weights]
    assert [g.shape for g in grad_b] == [b.shape for b in net.biases]
    assert rel_diff(grad_w + grad_b, numeric_w + numeric_b) < 1e-6


@pytest.mark.parametrize("n", [8, 1])
@pytest.mark.parametrize("sizes", [[12, 7, 5], [12, 6, 5, 4], [12, 5]])
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("name", ["matmul", "numba"])
def test_gradients_match_loop(name, cost, sizes, n):
    net = Network(sizes, seed=3)
    x, y = make_batch(n, sizes[0], sizes[-1], seed=4)
    want_w, want_b = kernels.get("loop").gradients(net, x, y, cost)
    grad_w, grad_b = kernels.get(name).gradients(net, x, y, cost)
    assert rel_diff(grad_w + grad_b, want_w + want_b) < 1e-10


def test_gradients_leave_the_network_alone():
    net = Network([12, 6, 5, 4], seed=3)
    before = net.copy()
    x, y = make_batch(8, 12, 4)
    for name in CORE:
        kernels.get(name).gradients(net, x, y, "quadratic")
    for p, q in zip(net.weights + net.biases, before.weights + before.biases):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("name", CORE)
def test_unknown_cost_is_a_value_error(name):
    net, kernel = Network([12, 5]), kernels.get(name)
    x, y = make_batch(4, 12, 5)
    with pytest.raises(ValueError, match="nope"):
        kernel.gradients(net, x, y, "nope")
    with pytest.raises(ValueError, match="nope"):
        kernel.train_epoch(net, x, y, np.arange(4), 2, 1.0, "nope")


# ----------------------------------------------------------------------------
# One epoch: against the reference SGD step, small and odd cases


@SMALL_EPOCHS
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("name", CORE)
def test_train_epoch_matches_reference_sgd(name, cost, sizes, n_samples, batch_size):
    x, y = make_batch(n_samples, sizes[0], sizes[-1], seed=5)
    order = np.random.default_rng(6).permutation(n_samples)
    net = Network(sizes, seed=7)
    want = net.copy()
    reference_epoch(want, x, y, order, batch_size, 3.0, cost)

    kernels.get(name).train_epoch(net, x, y, order, batch_size, 3.0, cost)

    start = Network(sizes, seed=7)
    assert rel_diff(want.weights, start.weights) > 1e-3, "the epoch did nothing"
    assert rel_diff(net.weights + net.biases, want.weights + want.biases) < 1e-9


@pytest.mark.parametrize("name", CORE)
def test_train_epoch_follows_order(name):
    """Taking the samples in another order gives other weights."""
    x, y = make_batch(20, 12, 5, seed=8)
    forward, backward = Network([12, 7, 5]), Network([12, 7, 5])
    kernel = kernels.get(name)
    kernel.train_epoch(forward, x, y, np.arange(20), 10, 3.0, "quadratic")
    kernel.train_epoch(backward, x, y, np.arange(20)[::-1], 10, 3.0, "quadratic")
    assert rel_diff(forward.weights, backward.weights) > 1e-6


# ----------------------------------------------------------------------------
# One epoch of the MNIST-shaped network: every kernel equals loop

# float32 bound: each of the 100 steps rounds to float32 (eps 6e-8) and the
# kernels sum the 784-long dot products and the 10-sample gradient sums in
# different orders (numba vectorises them with reassoc), so every step
# differs by some eps; a step's rounding is carried into the next, and 100
# steps of it stay far below 1e-4 relative while a wrong update would not.
EPOCH_RTOL = {"float64": 1e-9, "float32": 1e-4}


@pytest.fixture(scope="module")
def mnist_shaped():
    """Return 1,000 random MNIST-shaped samples, a fifth of pixels nonzero."""
    x, y = make_batch(1000, 784, 10, seed=11, density=0.2)
    order = np.random.default_rng(12).permutation(1000)
    return x, y, order


# 33 hidden units are six groups of five and three units alone in the numba
# kernel; batches of 7 are a sweep of five samples and two left over.
@pytest.mark.parametrize("sizes, batch_size", [([784, 30, 10], 10), ([784, 33, 10], 7)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["matmul", "numba"])
def test_mnist_epoch_matches_loop(mnist_shaped, name, dtype, sizes, batch_size):
    x, y, order = mnist_shaped
    x = x.astype(dtype)
    want, net = Network(sizes, dtype=dtype), Network(sizes, dtype=dtype)
    kernels.get("loop").train_epoch(want, x, y, order, batch_size, 3.0, "quadratic")

    kernels.get(name).train_epoch(net, x, y, order, batch_size, 3.0, "quadratic")

    start = Network(sizes, dtype=dtype)
    assert rel_diff(want.weights, start.weights) > 1e-3, "the epoch did nothing"
    assert rel_diff(net.weights, want.weights) < EPOCH_RTOL[dtype]
    assert rel_diff(net.biases, want.biases) < EPOCH_RTOL[dtype]


# ----------------------------------------------------------------------------
# The numba kernel: the result does not depend on the number of threads


@pytest.mark.skipif(
    threads.max_numba_threads() < 2, reason="Numba's pool has a single thread"
)
# [784, 5, 10] is one group of units: on two threads, one share is empty.
@pytest.mark.parametrize(
    "sizes", [[784, 30, 10], [784, 33, 10], [784, 40, 24, 10], [784, 10], [784, 5, 10]]
)
def test_numba_same_bits_on_one_and_two_threads(mnist_shaped, sizes):
    x, y, _ = mnist_shaped
    # 205 samples in batches of 10: the last batch holds 5.
    x, y = x[:205], y[:205]
    order = np.random.default_rng(13).permutation(205)
    kernel = kernels.get("numba")
    results = []
    for n_threads in (1, 2):
        net = Network(sizes, seed=3)
        with threads.limit(numba=n_threads):
            kernel.train_epoch(net, x, y, order, 10, 3.0, "cross-entropy")
        results.append(net)
    one, two = results
    for p, q in zip(one.weights + one.biases, two.weights + two.biases):
        assert np.array_equal(p, q)


# The numba kernel runs a net with one hidden layer as one parallel region
# whose threads meet at spin barriers, and falls back to a region a batch
# when its team of threads does not form.


def region_a_batch_epoch(net, x, y, order, batch_size, eta, cost):
    """Run the numba kernel's region-a-batch epoch on ``net``, in place."""
    kernel = kernels.get("numba")
    kernel._train(net, x, y, order, batch_size, eta, cost, team=False)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("sizes, batch_size", [([784, 30, 10], 10), ([784, 33, 10], 7)])
def test_numba_team_and_region_a_batch_give_the_same_bits(
    mnist_shaped, sizes, batch_size, n_threads
):
    if n_threads > threads.max_numba_threads():
        pytest.skip("Numba's pool has a single thread")
    x, y, order = mnist_shaped
    x, y, order = x[:205], y[:205], np.random.default_rng(5).permutation(205)
    team, regions = Network(sizes, seed=4), Network(sizes, seed=4)
    with threads.limit(numba=n_threads):
        kernels.get("numba").train_epoch(
            team, x, y, order, batch_size, 3.0, "quadratic"
        )
        region_a_batch_epoch(regions, x, y, order, batch_size, 3.0, "quadratic")
    for p, q in zip(team.weights + team.biases, regions.weights + regions.biases):
        assert np.array_equal(p, q)


def test_numba_team_that_cannot_form_changes_nothing():
    from hmnist.kernels import numba_parallel as nb

    x, y = make_batch(40, 12, 10, seed=2)
    net = Network([12, 10, 10], seed=1)
    layer = nb._first_layer(net, 10, 2)
    before = [a.copy() for a in layer[:-1]]
    b1 = net.biases[1].copy()
    parts = nb._line_blocks(2, 10, 10, net.dtype)
    order = np.arange(45) % 40
    sync = nb._team_sync(2)
    sums = nb._line_blocks(2, 10, 10, net.dtype)
    # A team of two on one thread: the first member waits for a second
    # that only comes after it, gives up, and the second finds the gate shut.
    with threads.limit(numba=1):
        nb._epoch_team(
            layer, b1, x, y.astype(np.int64), order, 40, 10, 3.0, 0, parts, 2, sync,
            10_000, 8, sums,
        )  # fmt: skip
    assert sync[nb._gate(2)] == nb._CLOSED + 2
    for p, q in zip(layer[:-1] + (b1,), before + [net.biases[1]]):
        assert np.array_equal(p, q)


def test_numba_epoch_falls_back_to_a_region_a_batch(mnist_shaped, monkeypatch):
    from hmnist.kernels import numba_parallel as nb

    x, y, order = mnist_shaped
    x, y, order = x[:205], y[:205], np.random.default_rng(6).permutation(205)
    want, net = Network([784, 30, 10], seed=5), Network([784, 30, 10], seed=5)
    region_a_batch_epoch(want, x, y, order, 10, 3.0, "quadratic")
    # The kernel asks for a team of two while Numba runs one thread.
    monkeypatch.setattr(nb.numba, "get_num_threads", lambda: 2)
    monkeypatch.setattr(nb, "GATE_SPINS", 10_000)
    with threads.limit(numba=1):
        nb.NumbaKernel().train_epoch(net, x, y, order, 10, 3.0, "quadratic")
    for p, q in zip(net.weights + net.biases, want.weights + want.biases):
        assert np.array_equal(p, q)


@pytest.mark.parametrize(
    "x",
    [
        np.zeros((4, 12), np.float32),
        np.zeros((12, 4)).T,
    ],
    ids=["wrong-dtype", "not-contiguous"],
)
def test_numba_rejects_samples_it_cannot_use(x):
    net = Network([12, 5])
    with pytest.raises(ValueError, match="numba"):
        kernels.get("numba").train_epoch(
            net, x, np.zeros(4, np.int64), np.arange(4), 2, 1.0, "quadratic"
        )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [1, 7, 10, 20, 100, 1000])
@pytest.mark.parametrize("n_in", [784, 12, 3])
def test_numba_tiles_are_whole_vectors_that_fit(n_in, batch_size, dtype):
    from hmnist.kernels import numba_parallel as nb
    from hmnist.kernels import simd

    kt = nb.tile_width(n_in, batch_size, dtype)
    lanes, itemsize = simd.lanes(dtype), np.dtype(dtype).itemsize
    assert kt % lanes == 0 and kt >= lanes
    assert kt <= max(n_in - n_in % lanes, lanes)
    two_batches = 2 * -(-batch_size // nb.GROUP) * nb.GROUP * itemsize
    if n_in == 784 and two_batches * kt > nb.TILE_BYTES:
        # Batches too large for L1 at any useful width: long tiles.
        assert kt * itemsize == nb.LONG_TILE_BYTES


# ----------------------------------------------------------------------------
# The numba kernel's sigmoid: glibc's vector exp where the CPU has one


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("m", [7, 13])
def test_numba_sigmoid_rows_match_numpy(dtype, m):
    from hmnist.kernels import numba_parallel as nb

    z = np.linspace(-40, 40, 5 * 13).reshape(5, 13).astype(dtype)
    # Extremes where exp overflows or underflows, in a row alone (scalar
    # exp only) and in a run of whole rows (vector exp when m == 13).
    z[0, :4] = z[2, :4] = [-1000, 1000, 0, -0.0]
    a = z.copy()
    nb._sigmoid_rows(a, 1, 5, m)
    nb._sigmoid_rows(a, 0, 1, m)

    with np.errstate(over="ignore"):
        want = 1 / (1 + np.exp(-z[:, :m].astype(np.float64)))
    np.testing.assert_allclose(a[:, :m], want, rtol=8 * np.finfo(dtype).eps, atol=0)
    for row in (0, 2):
        np.testing.assert_array_equal(a[row, :4], [0, 1, 0.5, 0.5])
    np.testing.assert_array_equal(a[:, m:], z[:, m:])  # past m: untouched


SCALAR_EXP_RUN = """
import numpy as np
from hmnist import kernels
from hmnist.kernels import simd
from hmnist.network import Network
assert simd.VECTOR_EXP is None, simd.VECTOR_EXP
rng = np.random.default_rng(0)
x, y = rng.random((205, 50)), rng.integers(0, 10, 205)
order = rng.permutation(205)
want, net = Network([50, 12, 10]), Network([50, 12, 10])
kernels.get("loop").train_epoch(want, x, y, order, 10, 3.0, "quadratic")
kernels.get("numba").train_epoch(net, x, y, order, 10, 3.0, "quadratic")
for p, q in zip(net.weights + net.biases, want.weights + want.biases):
    np.testing.assert_allclose(p, q, rtol=1e-10, atol=1e-12)
"""


def run_with_fresh_numba(tmp_path, script, **env):
    """Run ``script`` in a child Python with ``env`` and an empty Numba cache."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env, "NUMBA_CACHE_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_numba_without_vector_exp_matches_loop(tmp_path):
    # Compiling for a generic CPU turns libmvec off: the scalar path alone.
    run_with_fresh_numba(tmp_path, SCALAR_EXP_RUN, NUMBA_CPU_NAME="generic")


BOUNDSCHECK_RUN = """
import numpy as np
from hmnist import kernels, threads
from hmnist.network import Network
rng = np.random.default_rng(0)
cases = [([784, 33, 10], 7, "float64"), ([784, 33, 10], 7, "float32"),
         ([50, 12, 10], 3, "float64"), ([784, 5, 10], 10, "float32"),
         ([784, 10], 10, "float64"), ([784, 40, 24, 10], 10, "float64")]
for sizes, batch_size, dtype in cases:
    x = rng.random((53, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], 53)
    order = rng.permutation(53)
    args = x, y, order, batch_size, 3.0, "quadratic"
    for n_threads in (1, 2):
        want, net = Network(sizes, dtype=dtype), Network(sizes, dtype=dtype)
        kernels.get("loop").train_epoch(want, *args)
        with threads.limit(numba=n_threads):
            kernels.get("numba").train_epoch(net, *args)
        for p, q in zip(net.weights + net.biases, want.weights + want.biases):
            np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-5)
"""


def test_numba_indexes_stay_in_bounds(tmp_path):
    # Numba checks no index unless told to: an index past an array's end
    # reads or writes whatever lies there. With NUMBA_BOUNDSCHECK=1 one
    # raises IndexError; the cases pad units, samples and columns.
    run_with_fresh_numba(tmp_path, BOUNDSCHECK_RUN, NUMBA_BOUNDSCHECK="1")
