"""pytest-benchmark over the cells of ``hmnist bench``, at [784, 100, 10].

Each benchmark is one kernel on one thread count, batch size and dtype,
timing ``kernel.train_epoch`` over the same seeded samples as ``hmnist
bench`` (the loop kernel a tenth of them). The kernel's warm-up (JIT
compile, first BLAS call) runs before the timed rounds, and every round
starts from a fresh copy of the same network, made outside the timing.

Groups are named ``batch B dtype``, so the default grouping (or
``--benchmark-group-by=param:batch_size,param:dtype``) puts every kernel
and thread count of one batch size and dtype in one table;
``--benchmark-group-by=param:kernel_name`` compares one kernel across the
rest. Run with ``make bench-pytest``; a second run with
``--benchmark-compare`` sets it against the last saved one.
"""

import contextlib

import numba
import pytest

from hmnist import bench, kernels, threads
from hmnist.errors import HmnistError
from hmnist.network import Network
from hmnist.trainer import shuffles

SIZES = (784, 100, 10)
SAMPLES = 2000
ROUNDS = 5
SEED = 0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [10, 100], ids=lambda b: f"b{b}")
@pytest.mark.parametrize("n_threads", [1, 2], ids=lambda n: f"{n}t")
@pytest.mark.parametrize("kernel_name", kernels.names())
def test_train_epoch(benchmark, mnist, kernel_name, n_threads, batch_size, dtype):
    try:
        kernel = kernels.get(kernel_name)
    except kernels.KernelUnavailable as err:
        pytest.skip(str(err))
    if kernel.pool == "numba" and n_threads > threads.max_numba_threads():
        pytest.skip(f"Numba started with {threads.max_numba_threads()} threads")
    (x, y), _ = mnist(dtype)
    cell = bench.Cell(kernel_name, n_threads, None, None, batch_size, SIZES, dtype)
    n_samples = bench.samples_for(cell, SAMPLES, len(y))
    order = next(shuffles(SEED, len(x)))[:n_samples]
    initial = Network(SIZES, seed=SEED, dtype=dtype)

    def fresh_network():
        return (initial.copy(), x, y, order, batch_size, bench.ETA, bench.COST), {}

    with contextlib.ExitStack() as limited:
        try:
            limited.enter_context(kernel.limit_threads(n_threads))
        except HmnistError as err:  # JAX's threads are fixed per process
            pytest.skip(str(err))
        warmup = kernel.warm_up(
            initial, x, y, bench.COST, batch_size, n_samples=n_samples
        )
        bench.settle()  # the benchmark before may have left BLAS threads spinning
        benchmark.group = f"batch {batch_size} {dtype}"
        benchmark.extra_info.update(
            kernel=kernel_name, threads=n_threads, pool=kernel.pool,
            blas_threads=threads.blas_threads(),
            numba_threads=numba.get_num_threads(),
            threading_layer=threads.threading_layer(), samples=n_samples,
            sizes=list(SIZES), warmup_seconds=warmup,
        )  # fmt: skip
        benchmark.pedantic(
            kernel.train_epoch, setup=fresh_network, rounds=ROUNDS, iterations=1
        )
