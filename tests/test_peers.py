"""The peer kernels (PyTorch, JAX) against the loop kernel, and their threads.

Each test skips, with the reason, when the peer's framework is not
installed (``pip install -e '.[peers]'``). Relative errors are norm-wise,
``max|got - want| / max|want|`` over a whole parameter list.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import SMALL_EPOCHS, make_batch, rel_diff

from hmnist import kernels, threads
from hmnist.errors import HmnistError
from hmnist.network import Network

FRAMEWORKS = {"torch": "torch", "torch-fast": "torch", "jax": "jax"}
PEERS = tuple(FRAMEWORKS)
COSTS = ("quadratic", "cross-entropy")

# float32 bound: each of the 100 steps rounds to float32 (eps 6e-8), and a
# peer sums the 784-long dot products and the batch's gradients in another
# order than loop (BLAS blocks, XLA fusions), so every step differs by a
# few eps and carries it into the next; measured differences stay near
# 1e-6, a wrong update is off by far more than 1e-4.
EPOCH_RTOL = {"float64": 1e-9, "float32": 1e-4}


def peer(name):
    """Return the peer kernel ``name``, or skip when its framework is missing."""
    pytest.importorskip(FRAMEWORKS[name], reason=f"{name!r} needs the 'peers' extra")
    return kernels.get(name)


# ----------------------------------------------------------------------------
# Registry


def test_peers_are_registered():
    assert set(PEERS) <= set(kernels.names())


@pytest.mark.parametrize("name", PEERS)
def test_missing_framework_is_kernel_unavailable(name, monkeypatch):
    module = kernels._REGISTRY[name][0]
    monkeypatch.delitem(kernels._cache, name, raising=False)
    monkeypatch.delitem(sys.modules, f"hmnist.kernels.{module}", raising=False)
    monkeypatch.setitem(sys.modules, FRAMEWORKS[name], None)
    with pytest.raises(kernels.KernelUnavailable, match="peers"):
        kernels.get(name)


@pytest.mark.parametrize("name", PEERS)
def test_get_returns_the_named_peer(name):
    kernel = peer(name)
    assert kernel.name == name
    assert kernel.pool == FRAMEWORKS[name]
    assert name in kernels.available()


# ----------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("n", [8, 1])
@pytest.mark.parametrize("sizes", [[12, 7, 5], [12, 6, 5, 4], [12, 5]])
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("name", PEERS)
def test_gradients_match_loop(name, cost, sizes, n):
    kernel = peer(name)
    net = Network(sizes, seed=3)
    x, y = make_batch(n, sizes[0], sizes[-1], seed=4)
    want_w, want_b = kernels.get("loop").gradients(net, x, y, cost)

    grad_w, grad_b = kernel.gradients(net, x, y, cost)

    assert [type(g) for g in grad_w + grad_b] == [np.ndarray] * (2 * net.n_layers)
    assert [g.shape for g in grad_w] == [w.shape for w in net.weights]
    assert [g.shape for g in grad_b] == [b.shape for b in net.biases]
    assert rel_diff(grad_w + grad_b, want_w + want_b) < 1e-10


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("name", PEERS)
def test_mnist_gradients_match_loop(name, cost, dtype):
    kernel = peer(name)
    net = Network([784, 30, 10], seed=1, dtype=dtype)
    x, y = make_batch(50, 784, 10, seed=2, dtype=dtype, density=0.2)
    want_w, want_b = kernels.get("loop").gradients(net, x, y, cost)

    grad_w, grad_b = kernel.gradients(net, x, y, cost)

    assert {g.dtype for g in grad_w + grad_b} == {net.dtype}
    bound = 1e-10 if dtype == "float64" else 1e-5
    assert rel_diff(grad_w + grad_b, want_w + want_b) < bound


@pytest.mark.parametrize("name", PEERS)
def test_gradients_leave_the_network_alone(name):
    kernel = peer(name)
    net = Network([12, 6, 5, 4], seed=3)
    before = net.copy()
    x, y = make_batch(8, 12, 4)
    kernel.gradients(net, x, y, "quadratic")
    for p, q in zip(net.weights + net.biases, before.weights + before.biases):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("name", PEERS)
def test_unknown_cost_is_a_value_error(name):
    kernel = peer(name)
    net = Network([12, 5])
    x, y = make_batch(4, 12, 5)
    with pytest.raises(ValueError, match="nope"):
        kernel.gradients(net, x, y, "nope")
    with pytest.raises(ValueError, match="nope"):
        kernel.train_epoch(net, x, y, np.arange(4), 2, 1.0, "nope")


# ----------------------------------------------------------------------------
# One epoch


@pytest.fixture(scope="module")
def mnist_shaped():
    """Return 1,000 random MNIST-shaped samples, a fifth of pixels nonzero.

    A fifth is about MNIST's share of nonzero pixels. With every pixel
    nonzero, cross-entropy and eta 3.0 make the epoch chaotic: rounding
    differences of 1e-16 grow to 1e-3 in 100 steps for the core ``matmul``
    kernel as much as for the peers, so no kernel could be checked.
    """
    x, y = make_batch(1000, 784, 10, seed=11, density=0.2)
    order = np.random.default_rng(12).permutation(1000)
    return x, y, order


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("name", PEERS)
def test_mnist_epoch_matches_loop(mnist_shaped, name, cost, dtype):
    kernel = peer(name)
    x, y, order = mnist_shaped
    x = x.astype(dtype)
    want, net = Network([784, 30, 10], dtype=dtype), Network([784, 30, 10], dtype=dtype)
    arrays = net.weights + net.biases
    kernels.get("loop").train_epoch(want, x, y, order, 10, 3.0, cost)

    kernel.train_epoch(net, x, y, order, 10, 3.0, cost)

    start = Network([784, 30, 10], dtype=dtype)
    assert rel_diff(want.weights, start.weights) > 1e-3, "the epoch did nothing"
    assert all(p is q for p, q in zip(net.weights + net.biases, arrays))
    assert {p.dtype for p in net.weights + net.biases} == {net.dtype}
    assert rel_diff(net.weights, want.weights) < EPOCH_RTOL[dtype]
    assert rel_diff(net.biases, want.biases) < EPOCH_RTOL[dtype]


@SMALL_EPOCHS
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("name", PEERS)
def test_small_epochs_match_loop(name, cost, sizes, n_samples, batch_size):
    kernel = peer(name)
    x, y = make_batch(n_samples, sizes[0], sizes[-1], seed=5)
    order = np.random.default_rng(6).permutation(n_samples)
    net = Network(sizes, seed=7)
    want = net.copy()
    kernels.get("loop").train_epoch(want, x, y, order, batch_size, 3.0, cost)

    kernel.train_epoch(net, x, y, order, batch_size, 3.0, cost)

    start = Network(sizes, seed=7)
    assert rel_diff(want.weights, start.weights) > 1e-3, "the epoch did nothing"
    assert rel_diff(net.weights + net.biases, want.weights + want.biases) < 1e-9


@pytest.mark.parametrize("name", PEERS)
def test_last_batch_is_averaged_over_its_own_size(name):
    """Two samples, batch size 10: the single batch divides by 2, not 10."""
    kernel = peer(name)
    x, y = make_batch(2, 12, 5, seed=9)
    net = Network([12, 5], seed=1)
    want = net.copy()
    grad_w, grad_b = kernels.get("loop").gradients(want, x, y, "quadratic")
    for p, g in zip(want.weights + want.biases, grad_w + grad_b):
        p -= 1.0 * g

    kernel.train_epoch(net, x, y, np.arange(2), 10, 1.0, "quadratic")

    assert rel_diff(net.weights + net.biases, want.weights + want.biases) < 1e-12


@pytest.mark.parametrize("name", PEERS)
def test_warm_up_leaves_the_network_alone(name):
    kernel = peer(name)
    net = Network([12, 7, 5], seed=2)
    before = net.copy()
    x, y = make_batch(25, 12, 5)
    assert kernel.warm_up(net, x, y, "cross-entropy", 10) >= 0
    for p, q in zip(net.weights + net.biases, before.weights + before.biases):
        np.testing.assert_array_equal(p, q)


def test_jax_sees_a_new_array_of_the_same_shape():
    """The device copy of the data is reused only for the very same arrays."""
    kernel = peer("jax")
    x, y = make_batch(20, 12, 5, seed=3)
    first, second = Network([12, 5]), Network([12, 5])
    kernel.train_epoch(first, x, y, np.arange(20), 10, 3.0, "quadratic")
    kernel.train_epoch(second, x[::-1].copy(), y, np.arange(20), 10, 3.0, "quadratic")
    assert rel_diff(first.weights, second.weights) > 1e-6


# ----------------------------------------------------------------------------
# Threads and runtime info


@pytest.mark.parametrize("name", ["torch", "torch-fast"])
def test_torch_limit_threads_sets_and_restores(name):
    kernel = peer(name)
    import torch

    before = torch.get_num_threads()
    with kernel.limit_threads(1):
        assert torch.get_num_threads() == 1
        assert set(threads.blas_threads()) <= {1}
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("name", ["torch", "torch-fast"])
def test_torch_limit_threads_rejects_zero(name):
    with pytest.raises(ValueError, match="at least 1"):
        peer(name).limit_threads(0)


def test_jax_limit_threads_takes_only_its_own_count():
    kernel = peer("jax")
    with kernel.limit_threads(kernel.threads):
        assert set(threads.blas_threads()) <= {1}
    with pytest.raises(HmnistError, match="fixed per process"):
        kernel.limit_threads(kernel.threads + 1)


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity"
)
def test_jax_started_on_one_core_runs_one_thread():
    peer("jax")
    script = textwrap.dedent(
        """
        import os
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        from hmnist import kernels
        kernel = kernels.get("jax")
        with kernel.limit_threads(1):
            pass
        print(kernel.info()["xla_threads"])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]


@pytest.mark.parametrize("name", PEERS)
def test_info_names_the_framework_and_its_pools(name):
    info = peer(name).info()
    assert info["name"] == name
    assert info["pool"] == FRAMEWORKS[name]
    assert FRAMEWORKS[name] in info
    assert any(lib["user_api"] == "blas" for lib in info["threadpool_info"])
    if FRAMEWORKS[name] == "torch":
        assert info["torch_threads"] >= 1
        assert any("parallel backend" in line for line in info["parallel_info"])
    else:
        assert info["xla_threads"] >= 1 and info["x64"] is True


@pytest.fixture
def jax_compiles():
    """Return a list that JAX appends to for every XLA compilation from now on."""
    peer("jax")
    from jax import monitoring

    compiles = []

    def count(event, seconds, **kwargs):
        """Note a compilation by XLA."""
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(seconds)

    monitoring.register_event_duration_secs_listener(count)
    yield compiles
    monitoring.unregister_event_duration_listener(count)


@pytest.mark.parametrize("n_samples", [25, 13, 20, 7])
def test_jax_warm_up_compiles_what_the_epoch_runs(jax_compiles, n_samples):
    """After warm-up for N samples, an epoch over N samples compiles nothing."""
    kernel = peer("jax")
    x, y = make_batch(25, 12, 5, seed=4)
    net = Network([12, 7, 5], seed=5)
    kernel.warm_up(net, x, y, "quadratic", 10, n_samples=n_samples)
    assert kernel.info()["compile_seconds"] >= 0
    compiled = len(kernel._compiled)
    want = net.copy()
    order = np.random.default_rng(7).permutation(25)[:n_samples]
    kernels.get("loop").train_epoch(want, x, y, order, 10, 3.0, "quadratic")
    jax_compiles.clear()

    kernel.train_epoch(net, x, y, order, 10, 3.0, "quadratic")

    assert jax_compiles == []
    assert len(kernel._compiled) == compiled
    assert rel_diff(net.weights + net.biases, want.weights + want.biases) < 1e-9


def test_jax_warm_up_compiles_for_every_sample_by_default(jax_compiles):
    """The trainer's warm-up, without ``n_samples``, covers epochs over all of x."""
    kernel = peer("jax")
    x, y = make_batch(23, 12, 5, seed=4, dtype="float32")
    net = Network([12, 6, 5, 4], seed=5, dtype="float32")
    kernel.warm_up(net, x, y, "cross-entropy", 4)
    jax_compiles.clear()

    order = np.random.default_rng(8).permutation(23)
    kernel.train_epoch(net, x, y, order, 4, 3.0, "cross-entropy")

    assert jax_compiles == []


def test_jax_warm_up_rejects_more_samples_than_x():
    kernel = peer("jax")
    x, y = make_batch(5, 12, 5)
    with pytest.raises(ValueError, match="n_samples"):
        kernel.warm_up(Network([12, 5]), x, y, "quadratic", 2, n_samples=6)


@pytest.mark.parametrize("name", ["loop", "matmul", "numba", *PEERS])
def test_every_kernel_takes_the_samples_to_warm_up_for(name):
    kernel = kernels.get(name) if name not in PEERS else peer(name)
    net = Network([12, 7, 5], seed=2)
    before = net.copy()
    x, y = make_batch(25, 12, 5)
    assert kernel.warm_up(net, x, y, "quadratic", 10, n_samples=20) >= 0
    for p, q in zip(net.weights + net.biases, before.weights + before.biases):
        np.testing.assert_array_equal(p, q)
