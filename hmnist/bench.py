"""The benchmark matrix: cells, warm-up, timing, and results files.

A cell is one kernel on one thread setting, batch size, layer sizes and
dtype. Each cell is measured in the same way:

1. a fresh network from the run's seed and a fresh sample order (the
   first permutation of the run's seed, cut to the samples timed);
2. the thread limit: the kernel's own pool (``kernel.limit_threads(n)``),
   or BLAS and Numba set apart (``threads.limit(blas=, numba=)``);
3. the kernel's warm-up (JIT compile, first BLAS call), timed but not
   counted, then a pause (:func:`settle`) for the threads of pools used
   before to go to sleep;
4. ``repeats`` timed runs of ``kernel.train_epoch`` over the same samples,
   each from a copy of the same initial network, so that every repeat,
   and every kernel, does the same work;
5. the test accuracy of the network the last repeat trained, so that
   equal computations can be seen to be equal.

Before and after each cell, :func:`hmnist.probe.round_trip_ns` times a
cache line's round trip between two cores: on a virtual machine it says
whether the cores were placed close together or far apart while the
cell ran, which went with slower 2-thread numba cells on this suite's
machine.

A kernel whose threads are fixed when its framework starts (JAX, see
``CHILD_KERNELS``) is measured in a child process started on as many
cores as the cell has threads, in the same five steps on the same data
(:func:`measure_in_child`); every record says where it ran (``process``,
``"parent"`` or ``"child"``) and on which cores (``affinity``).

Timings are normalised per sample and per 60,000-sample epoch, and set
against this machine's practical peak: a large matrix product through the
same BLAS, per dtype and thread count.

The results document is rewritten (atomically) after every cell; see
:func:`new_document` for its layout. This module returns numbers and
never prints.
"""

import contextlib
import gc
import json
import math
import os
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import threadpoolctl

from . import data, stats, threads
from ._io import write_json
from .errors import HmnistError
from .network import Network
from .trainer import shuffles

FORMAT_VERSION = 1
EPOCH_SAMPLES = 60_000
# The work each cell times: the book's chapter 1 run.
COST, ETA = "quadratic", 3.0
# Kernels this many times slower than the others time that fraction of the
# samples, so that a cell of theirs takes about as long as anyone's.
SLOW_KERNELS = {"loop": 10, "torch": 10}
# Idle threads of the pool that ran last keep their cores busy for a while:
# OpenBLAS's spin for 2^28 CPU cycles (0.1 s at 2.7 GHz) before they sleep.
# A Numba epoch that starts within that time, after the evaluation of the
# cell before it, runs up to 1.5x slower (bench/test_pool_handoff.py); so a
# cell's timed repeats start this long after its warm-up, enough for a
# clock of 1 GHz.
SETTLE_SECONDS = 0.3
# Kernels whose threads are fixed when their framework starts (XLA sizes its
# pool to the cores the process may use): each of their cells is measured
# in a child process started on as many cores as the cell has threads.
CHILD_KERNELS = ("jax",)

KEY_FIELDS = (
    "kernel", "threads", "blas_threads", "numba_threads",
    "batch_size", "sizes", "dtype",
)  # fmt: skip
CELL_FIELDS = (
    "samples", "repeat_seconds", "warmup_seconds", "median_seconds",
    "iqr_seconds", "samples_per_second", "seconds_per_epoch", "gflops",
    "fraction_of_peak", "test_accuracy",
)  # fmt: skip


@dataclass(frozen=True)
class Preset:
    """A named matrix: the axes, and how much each cell times.

    ``threads`` counts the kernel's own pool; ``blas_threads`` and
    ``numba_threads`` set both pools apart, as extra cells.
    """

    kernels: tuple
    threads: tuple = ()
    blas_threads: tuple = ()
    numba_threads: tuple = ()
    batch_sizes: tuple = (10,)
    sizes: tuple = ((784, 30, 10),)
    dtypes: tuple = ("float64",)
    samples: int = 60_000
    repeats: int = 5
    peak_size: int = 2048


PRESETS = {
    # Well under a minute; the test suite runs it.
    "quick": Preset(
        kernels=("matmul", "numba"), threads=(1,), samples=6000, repeats=5,
        peak_size=1024,
    ),
    # The README's main job: the three kernels and the peers (those not
    # installed are skipped), about 15 minutes on two cores.
    "standard": Preset(
        kernels=("loop", "matmul", "numba", "torch", "torch-fast", "jax"),
        threads=(1, 2), batch_sizes=(10, 100),
        sizes=((784, 30, 10), (784, 100, 10)), dtypes=("float64", "float32"),
        samples=20_000, repeats=5,
    ),
    # Every kernel (those not installed are skipped), both pools apart
    # (oversubscribed too), batch sizes over three decades, wider and deeper
    # nets: hours, not minutes.
    "full": Preset(
        kernels=None, threads=(1, 2), blas_threads=(1, 2, 4), numba_threads=(1, 2),
        batch_sizes=(1, 10, 100, 1000),
        sizes=((784, 30, 10), (784, 100, 10), (784, 300, 10), (784, 100, 100, 10)),
        dtypes=("float64", "float32"), samples=30_000, repeats=5,
    ),
}  # fmt: skip


def settle():
    """Wait until idle threads of the pools used before have gone to sleep."""
    time.sleep(SETTLE_SECONDS)


def flops_per_sample(sizes):
    """Return the floating-point operations one sample's backprop costs.

    Per sample and per layer of ``n_in x n_out`` weights, counting a
    multiply-add as two operations:

    - forward pass ``W a``: ``2 n_in n_out``;
    - weight gradient ``delta a^T``: ``2 n_in n_out``;
    - error propagation ``W^T delta``: ``2 n_in n_out``, for every layer
      but the first (the input needs no error).

    Ignored: elementwise work (sigmoid, biases, output error), which grows
    with ``n_out`` alone, and the update of the weights, ``2 n_in n_out``
    once per batch, a ``1 / batch_size`` share per sample.

    Parameters
    ----------
    sizes : sequence of int
        Neurons per layer, e.g. ``(784, 30, 10)``.

    Returns
    -------
    int
    """
    total = 0
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        passes = 2 if l == 0 else 3
        total += passes * 2 * n_in * n_out
    return total


@dataclass(frozen=True)
class Cell:
    """One point of the matrix.

    Attributes
    ----------
    kernel : str
    threads : int
        Threads of the kernel's own pool: BLAS for ``loop`` and
        ``matmul``, Numba's for ``numba``, a peer's own.
    blas_threads, numba_threads : int or None
        The limits set on each pool; None where a pool is left alone.
    batch_size : int
    sizes : tuple of int
    dtype : str
    apart : bool
        Set the two pools with ``threads.limit`` rather than the kernel's
        ``limit_threads``; not part of the cell's identity.
    """

    kernel: str
    threads: int
    blas_threads: int | None
    numba_threads: int | None
    batch_size: int
    sizes: tuple
    dtype: str
    apart: bool = field(default=False, compare=False)

    def key(self):
        """Return the tuple that identifies the cell in a results file."""
        return tuple(getattr(self, name) for name in KEY_FIELDS)

    def oversubscribed(self):
        """Return True when the cell asks for more threads than cores."""
        busy = threads.oversubscribed(self.blas_threads, self.numba_threads)
        return busy or self.threads > threads.cores()

    def limit(self, kernel):
        """Return the context manager that sets this cell's threads."""
        if self.apart:
            return threads.limit(blas=self.blas_threads, numba=self.numba_threads)
        return kernel.limit_threads(self.threads)

    def label(self):
        """Return a short description, e.g. ``numba 2t batch 10 784-30-10 float64``."""
        sizes = "-".join(map(str, self.sizes))
        where = threads_label(vars(self))
        return f"{self.kernel} {where} batch {self.batch_size} {sizes} {self.dtype}"


def threads_label(record):
    """Return ``2t`` for a kernel's own pool, ``blas 2 x numba 1`` set apart."""
    if not record.get("apart"):
        return f"{record['threads']}t"
    parts = [
        f"{pool} {record[f'{pool}_threads']}"
        for pool in ("blas", "numba")
        if record[f"{pool}_threads"] is not None
    ]
    return " x ".join(parts)


def record_key(record):
    """Return a results record's identity, comparable with :meth:`Cell.key`."""
    return tuple(
        tuple(record[name]) if name == "sizes" else record[name] for name in KEY_FIELDS
    )


def _settings(pool, own, blas, numba):
    """Yield ``(threads, blas, numba, apart)`` for a kernel drawing on ``pool``."""
    for n in own:
        if pool == "blas":
            yield n, n, None, False
        elif pool == "numba":
            yield n, 1, n, False
        else:
            yield n, None, None, False
    # A pool the kernel does not use is not multiplied out; a peer uses
    # neither NumPy's BLAS nor Numba, so it has no cells with them apart.
    if not (blas or numba) or pool not in ("blas", "numba"):
        return
    for b in blas or (1,):
        if pool == "blas":
            yield b, b, None, True
            continue
        for m in numba or (1,):
            yield m, b, m, True


def make_cells(pools, *, threads=(), blas_threads=(), numba_threads=(),
               batch_sizes, sizes, dtypes):  # fmt: skip
    """Return the matrix's cells, without duplicates, in the order to run.

    Parameters
    ----------
    pools : dict of str to str
        Kernel name to the pool it draws on (``Kernel.pool``), in order.
    threads : sequence of int
        Counts of each kernel's own pool.
    blas_threads, numba_threads : sequence of int
        Counts of the two pools set apart; a kernel that uses BLAS only
        gets the BLAS axis, the Numba kernel both. A missing axis is 1.
    batch_sizes, sizes, dtypes : sequence
        The other axes.

    Returns
    -------
    list of Cell
        Dtype outermost (one data set in memory at a time), kernels and
        threads innermost, so that a drift of the machine touches every
        kernel alike. A setting both axes give (``matmul`` at 2 threads
        and at ``blas 2``) appears once.
    """
    cells, seen = [], set()
    for dtype in dtypes:
        for layer_sizes in sizes:
            for batch_size in batch_sizes:
                for name, pool in pools.items():
                    for n, b, m, apart in _settings(
                        pool, threads, blas_threads, numba_threads
                    ):
                        cell = Cell(
                            name, n, b, m, batch_size, tuple(layer_sizes), dtype, apart
                        )
                        if cell.key() not in seen:
                            seen.add(cell.key())
                            cells.append(cell)
    return cells


def samples_for(cell, samples, n_train):
    """Return how many samples ``cell`` times: whole batches, slow kernels fewer."""
    n = max(1, samples // SLOW_KERNELS.get(cell.kernel, 1))
    n = math.ceil(n / cell.batch_size) * cell.batch_size
    return min(n, n_train)


def load_samples(folder, dtype):
    """Return ``(train, test)`` pairs with every training image of the files.

    The test images stay uint8; ``Network.evaluate`` scales them.
    """
    folder = data.data_dir(folder)
    paths = {key: data.find_file(folder, name) for key, name in data.FILES.items()}
    train_x, train_y = data.read_pair(paths["train_images"], paths["train_labels"])
    test_x, test_y = data.read_pair(paths["test_images"], paths["test_labels"])
    return (
        (data.to_float(train_x, dtype), train_y.astype(np.int64)),
        (test_x, test_y.astype(np.int64)),
    )


def measure_peak(dtype, n_threads, size=2048, repeats=3):
    """Time ``size x size`` matrix products through NumPy's BLAS.

    This machine's practical peak for ``dtype`` on ``n_threads`` threads:
    one untimed product, then the median of ``repeats``.

    Returns
    -------
    dict
        ``dtype``, ``threads``, ``size``, ``seconds`` (every repeat) and
        ``gflops`` (``2 size^3`` operations over the median).
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    seconds = []
    with threads.limit(blas=n_threads):
        a @ b
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            seconds.append(time.perf_counter() - start)
    gflops = 2 * size**3 / stats.median(seconds) / 1e9
    return {
        "dtype": dtype, "threads": n_threads, "size": size,
        "seconds": seconds, "gflops": gflops,
    }  # fmt: skip


def peak_threads(cell):
    """Return the thread count whose peak a cell is set against."""
    return min(cell.threads, threads.cores())


def find_peak(document, dtype, n_threads):
    """Return the peak of ``document`` for this dtype and thread count, or None."""
    for peak in document["peaks"]:
        if peak["dtype"] == dtype and peak["threads"] == n_threads:
            return peak
    return None


def measure_cell(cell, kernel, train, test, *, samples, repeats, seed):
    """Warm up, then time ``repeats`` runs of ``samples`` samples of one cell.

    Parameters
    ----------
    cell : Cell
    kernel : Kernel
        The kernel named by ``cell.kernel``.
    train, test : tuple of ndarray
        ``(x, y)``: ``x`` ``(n, 784)`` in ``cell.dtype``, ``y`` ``(n,)``.
    samples : int
        The samples each repeat trains, in the seed's order.
    repeats : int
    seed : int
        Seeds the initial network and the order of the samples.

    Returns
    -------
    dict
        The measured part of a record: samples, warm-up seconds, every
        repeat's seconds, test accuracy, and the thread pools and kernel
        as they were inside the limit.
    """
    x, y = train
    order = next(shuffles(seed, len(x)))[:samples]
    initial = Network(cell.sizes, seed=seed, dtype=cell.dtype)
    seconds = []
    gc.collect()
    with contextlib.ExitStack() as limited:
        with warnings.catch_warnings():
            # The caller warns once per cell, naming it; threads.limit would too.
            warnings.simplefilter("ignore", threads.OversubscriptionWarning)
            limited.enter_context(cell.limit(kernel))
        warmup = kernel.warm_up(initial, x, y, COST, cell.batch_size, samples)
        settle()
        for _ in range(repeats):
            net = initial.copy()
            gc.collect()
            start = time.perf_counter()
            kernel.train_epoch(net, x, y, order, cell.batch_size, ETA, COST)
            seconds.append(time.perf_counter() - start)
        pools = threadpoolctl.threadpool_info()
        kernel_info = kernel.info()
    correct = net.evaluate(*test)
    return {
        "samples": int(samples), "warmup_seconds": warmup,
        "repeat_seconds": seconds, "test_correct": correct,
        "test_total": len(test[1]),
        "test_accuracy": correct / len(test[1]) if len(test[1]) else None,
        "threadpool_info": pools, "kernel_info": kernel_info,
    }  # fmt: skip


def child_cores(n_threads):
    """Return the cores a child process measuring on ``n_threads`` may use.

    The first ``n_threads`` cores of those this process may use.

    Raises
    ------
    HmnistError
        When this process may use fewer cores than ``n_threads``, or the
        platform cannot restrict a process to some cores.
    """
    if not hasattr(os, "sched_setaffinity"):
        raise HmnistError(
            "measuring on a set number of cores needs os.sched_setaffinity, "
            "which this platform lacks"
        )
    allowed = sorted(os.sched_getaffinity(0))
    if n_threads > len(allowed):
        raise HmnistError(
            f"a process on {n_threads} threads needs {n_threads} cores; "
            f"this one may use {len(allowed)}"
        )
    return allowed[:n_threads]


# The child sets its cores before anything imports a framework, then runs
# the hmnist this module belongs to.
_CHILD_CODE = """\
import os, sys
os.sched_setaffinity(0, {cores!r})
sys.path.insert(0, {top!r})
from hmnist.bench import _child_main
sys.exit(_child_main())
"""


def measure_in_child(cell, *, data_dir=None, samples, repeats, seed):
    """Measure one cell as :func:`measure_cell` does, in a child process.

    The child is a new Python started on the first ``cell.threads`` cores
    this process may use (``os.sched_setaffinity`` before any framework is
    imported), so that a framework sizing its threads to those cores
    (JAX) starts with the cell's thread count. It loads the data from
    the same folder, and warms up and times the same samples, repeats
    and seed; its result travels back as JSON on its stdout.

    Parameters
    ----------
    cell : Cell
    data_dir : str or Path, optional
        See :func:`hmnist.data.data_dir`.
    samples, repeats, seed : int
        As in :func:`measure_cell`.

    Returns
    -------
    dict
        What :func:`measure_cell` returns, with ``process`` ``"child"``
        and ``affinity``, the child's cores.

    Raises
    ------
    HmnistError
        One line, when the child cannot be started on the cell's cores,
        fails, or answers with something other than its measurement.

    Warns
    -----
    RuntimeWarning
        For each warning the child raised while measuring.
    """
    cores = child_cores(cell.threads)
    request = {
        "cell": {**asdict(cell), "sizes": list(cell.sizes)},
        "data_dir": str(data.data_dir(data_dir)),
        "samples": samples, "repeats": repeats, "seed": seed,
    }  # fmt: skip
    top = str(Path(__file__).resolve().parent.parent)
    code = _CHILD_CODE.format(cores=set(cores), top=top)
    done = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(request),
        capture_output=True, text=True,
    )  # fmt: skip
    where = f"the child process on {len(cores)} core(s)"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        why = lines[-1].strip() if lines else f"exit code {done.returncode}"
        raise HmnistError(f"{where} failed: {why}")
    try:
        reply = json.loads(done.stdout.strip().splitlines()[-1])
        measured, messages = reply["measured"], reply["warnings"]
    except (IndexError, ValueError, KeyError, TypeError):
        raise HmnistError(f"{where} gave no measurement on its stdout") from None
    for message in messages:
        warnings.warn(f"{where}: {message}", RuntimeWarning, stacklevel=2)
    return {**measured, "process": "child", "affinity": cores}


def _child_main():
    """Measure the cell stdin describes; print the measurement as JSON; exit code."""
    from . import kernels

    request = json.load(sys.stdin)
    cell = Cell(**{**request["cell"], "sizes": tuple(request["cell"]["sizes"])})
    try:
        kernel = kernels.get(cell.kernel)
        train, test = load_samples(request["data_dir"], cell.dtype)
        with warnings.catch_warnings(record=True) as caught:
            measured = measure_cell(
                cell, kernel, train, test, samples=request["samples"],
                repeats=request["repeats"], seed=request["seed"],
            )  # fmt: skip
    except HmnistError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    messages = [f"{w.category.__name__}: {w.message}" for w in caught]
    print(json.dumps({"measured": measured, "warnings": messages}))
    return 0


def make_record(cell, pool, measured, peak):
    """Return a cell's results record: its axes, the measurements, the rates."""
    seconds = measured["repeat_seconds"]
    n = measured["samples"]
    median, spread = stats.median(seconds), stats.iqr(seconds)
    flops = flops_per_sample(cell.sizes)
    gflops = flops * n / median / 1e9
    return {
        "kernel": cell.kernel, "pool": pool, "threads": cell.threads,
        "blas_threads": cell.blas_threads, "numba_threads": cell.numba_threads,
        "apart": cell.apart, "batch_size": cell.batch_size,
        "sizes": list(cell.sizes), "dtype": cell.dtype,
        "oversubscribed": cell.oversubscribed(),
        **measured,
        "median_seconds": median, "iqr_seconds": spread,
        "samples_per_second": n / median,
        "seconds_per_epoch": median / n * EPOCH_SAMPLES,
        "iqr_seconds_per_epoch": spread / n * EPOCH_SAMPLES,
        "flops_per_sample": flops, "gflops": gflops,
        "peak_gflops": peak["gflops"], "fraction_of_peak": gflops / peak["gflops"],
    }  # fmt: skip


def new_document(options):
    """Return an empty results document for this machine and code.

    Layout: ``format_version``, ``command`` ("bench"), ``machine``
    (:func:`threads.runtime_info`), ``commit``, ``started`` (local ISO
    time), ``options`` (the matrix asked for), ``peaks`` (one per dtype
    and thread count, see :func:`measure_peak`) and ``cells`` (one record
    per measured cell, see :func:`make_record`).
    """
    return {
        "format_version": FORMAT_VERSION, "command": "bench",
        "machine": threads.runtime_info(), "commit": threads.git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": options, "peaks": [], "cells": [],
    }  # fmt: skip


def same_origin(document, other):
    """Return True when two documents share machine (cpu, cores) and commit."""
    mine, theirs = document["machine"], other["machine"]
    return (
        mine.get("cpu") == theirs.get("cpu")
        and mine.get("cores") == theirs.get("cores")
        and document.get("commit") == other.get("commit")
    )


def pending(document, cells):
    """Return the cells whose key is not among the document's records."""
    done = {record_key(record) for record in document["cells"]}
    return [cell for cell in cells if cell.key() not in done]


def run(document, cells, path, kernel_of, *, data_dir=None, samples, repeats,
        seed, peak_size, on_cell=None):  # fmt: skip
    """Measure ``cells`` in order; after each, rewrite ``path`` atomically.

    Parameters
    ----------
    document : dict
        From :func:`new_document` or a resumed file; records and peaks are
        appended to it.
    cells : list of Cell
    path : str or Path
    kernel_of : dict of str to Kernel
        Every kernel the cells name, loaded before any limit is set
        (threadpoolctl reaches only libraries already loaded).
    data_dir : str or Path, optional
        See :func:`hmnist.data.data_dir`.
    samples, repeats, seed, peak_size : int
        As in :class:`Preset`; slow kernels time fewer samples
        (:func:`samples_for`).
    on_cell : callable, optional
        Called as ``on_cell(cell, record)`` after each cell is saved.

    Warns
    -----
    OversubscriptionWarning
        Once per cell that asks for more threads than cores.
    RuntimeWarning
        For a cell that cannot be measured (an HmnistError: the kernel
        refuses it, or its child process fails), which is skipped; and
        for each warning a child process raised.
    """
    from . import probe  # loads Numba, which a report of the results does not need

    # One probe between cells serves as the round trip after one cell and
    # before the next: it is taken after a pause and before any peak's
    # matrix product, so no BLAS threads spin on the cores while it runs.
    trip = probe.round_trip_ns()
    loaded = (None, None)
    for cell in cells:
        if loaded[0] != cell.dtype:
            loaded = (None, None)  # free one dtype's copy before the next
            loaded = (cell.dtype, load_samples(data_dir, cell.dtype))
        train, test = loaded[1]
        n_peak = peak_threads(cell)
        peak = find_peak(document, cell.dtype, n_peak)
        if peak is None:
            peak = measure_peak(cell.dtype, n_peak, size=peak_size)
            document["peaks"].append(peak)
        if cell.oversubscribed():
            warnings.warn(
                f"{cell.label()}: more threads than the {threads.cores()} cores",
                threads.OversubscriptionWarning,
                stacklevel=2,
            )
        kernel = kernel_of[cell.kernel]
        n_samples = samples_for(cell, samples, len(train[1]))
        try:
            if cell.kernel in CHILD_KERNELS:
                measured = measure_in_child(
                    cell, data_dir=data_dir, samples=n_samples, repeats=repeats,
                    seed=seed,
                )  # fmt: skip
            else:
                measured = measure_cell(
                    cell, kernel, train, test, samples=n_samples,
                    repeats=repeats, seed=seed,
                )  # fmt: skip
                measured.update(process="parent", affinity=_affinity())
        except HmnistError as err:
            # A cell that cannot be run here (too few cores for a child, a
            # kernel refusing the thread count) says why; the rest goes on.
            warnings.warn(
                f"{cell.label()}: skipped: {err}", RuntimeWarning, stacklevel=2
            )
            continue
        before = trip
        settle()  # after the evaluation's BLAS threads
        trip = probe.round_trip_ns()
        measured["core_round_trip_ns"] = [before, trip]
        record = make_record(cell, kernel.pool, measured, peak)
        document["cells"].append(record)
        document["machine"] = threads.runtime_info()
        write_json(path, document)
        if on_cell is not None:
            on_cell(cell, record)
    return document


def _affinity():
    """Return the cores this process may use, sorted; None where unknown."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))


def default_out(preset):
    """Return ``results/bench-<preset>-<timestamp>-<pid>.json``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("results", f"bench-{preset}-{stamp}-{os.getpid()}.json")


def read_results(path, commands=("bench",)):
    """Read an hmnist results file; check its layout.

    Parameters
    ----------
    path : str or Path
    commands : tuple of str
        The ``command`` values accepted: ``"bench"``, ``"train"``.

    Returns
    -------
    dict
        The document.

    Raises
    ------
    HmnistError
        One line naming the file and the problem, when it cannot be read,
        is not JSON, or is not a results file of an accepted command.
    """
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except OSError as err:
        raise HmnistError(f"{path}: cannot read ({err.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HmnistError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(document, dict) or "command" not in document:
        raise HmnistError(f"{path}: not an hmnist results file (no 'command')")
    command = document["command"]
    if command not in commands:
        raise HmnistError(
            f"{path}: an hmnist {command!r} file; expected {' or '.join(commands)}"
        )
    if document.get("format_version") != FORMAT_VERSION:
        raise HmnistError(
            f"{path}: format_version {document.get('format_version')!r}, "
            f"this hmnist reads {FORMAT_VERSION}"
        )
    try:
        _check_train(document) if command == "train" else _check_bench(document)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise HmnistError(
            f"{path}: damaged {command} results ({type(err).__name__}: {err})"
        ) from None
    return document


def _check_train(document):
    """Raise KeyError or TypeError unless a train document has its epochs."""
    for epoch in document["epochs"]:
        float(epoch["accuracy"]), int(epoch["epoch"])
    document["config"]["cost"]


def _check_bench(document):
    """Raise KeyError or TypeError unless a bench document has its records."""
    document["machine"]["cpu"], document["machine"]["cores"]
    for record in document["cells"]:
        record_key(record)
        for name in CELL_FIELDS:
            record[name]
        float(record["seconds_per_epoch"])
    list(document["peaks"])
