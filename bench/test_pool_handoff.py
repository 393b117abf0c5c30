"""pytest-benchmark of one thread pool handing the cores to another.

A numba epoch on two threads, 20,000 samples of [784, 100, 10] at batch 10
(the matrix's cell), right after a matrix product on two BLAS threads: the
product's OpenBLAS threads busy-wait for 2^28 CPU cycles before they
sleep, on the cores the epoch needs. ``pause`` is the time between the
product and the epoch: none, or :data:`hmnist.bench.SETTLE_SECONDS`, what
``hmnist bench`` waits before a cell's timed repeats. Both are in group
``handoff``; their ratio is what an evaluation on BLAS between two epochs
costs the next one (``hmnist train`` holds BLAS at 1 for such kernels).
"""

import numpy as np
import pytest

from hmnist import bench, kernels, threads
from hmnist.network import Network
from hmnist.trainer import shuffles

SIZES = (784, 100, 10)
SAMPLES = 20_000
ROUNDS = 15
SEED = 0


@pytest.mark.parametrize(
    "pause", [0.0, bench.SETTLE_SECONDS], ids=["no pause", "settled"]
)
def test_numba_epoch_after_a_blas_product(benchmark, mnist, pause):
    if threads.cores() < 2 or threads.max_numba_threads() < 2:
        pytest.skip("needs two cores and two Numba threads")
    kernel = kernels.get("numba")
    (x, y), _ = mnist("float64")
    order = next(shuffles(SEED, len(x)))[:SAMPLES]
    initial = Network(SIZES, seed=SEED)
    a = np.random.default_rng(SEED).standard_normal((1024, 1024))

    def after_a_product():
        with threads.limit(blas=2):
            a @ a
        if pause:
            bench.settle()
        return (initial.copy(), x, y, order, 10, bench.ETA, bench.COST), {}

    with kernel.limit_threads(2):
        kernel.warm_up(initial, x, y, bench.COST, 10, n_samples=SAMPLES)
        benchmark.group = "handoff"
        benchmark.extra_info.update(pause_seconds=pause, samples=SAMPLES)
        benchmark.pedantic(
            kernel.train_epoch, setup=after_a_product, rounds=ROUNDS, iterations=1
        )
