"""Set BLAS and Numba threads together, and describe the runtime.

BLAS threads are set with threadpoolctl, which reaches only libraries
already loaded in the process: import what a computation needs (NumPy,
a peer framework) before entering :func:`limit`. Numba's threads are set
with ``numba.set_num_threads``, which may not exceed the pool Numba
started with (``NUMBA_NUM_THREADS``, by default the number of cores).

Numba is imported only when a Numba thread count is asked for: it loads
LLVM, about 120 MB resident and half a second, which a run of the loop,
matmul or peer kernels does not need.
"""

import contextlib
import os
import platform
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import threadpoolctl

ENV_VARS = (
    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
)  # fmt: skip


class OversubscriptionWarning(UserWarning):
    """BLAS threads times Numba threads exceed the cores."""


def cores():
    """Return the number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _numba():
    """Return the Numba module, importing it if this process has not yet."""
    import numba

    return numba


def max_numba_threads():
    """Return the largest count ``numba.set_num_threads`` accepts."""
    return _numba().config.NUMBA_NUM_THREADS


def oversubscribed(blas, numba_threads):
    """Return True when ``blas * numba_threads`` exceeds the cores."""
    return (blas or 1) * (numba_threads or 1) > cores()


@contextlib.contextmanager
def limit(blas=None, numba=None):
    """Limit BLAS and Numba threads inside the block; restore both after.

    Parameters
    ----------
    blas : int, optional
        Threads of every loaded BLAS library; None leaves them alone.
    numba : int, optional
        Numba's threads; None leaves them alone.

    Warns
    -----
    OversubscriptionWarning
        When ``blas * numba`` exceeds the cores: the two pools then compete
        for cores and spin against each other.
    """
    if numba is not None and not 1 <= numba <= max_numba_threads():
        raise ValueError(
            f"numba threads must be 1..{max_numba_threads()} (NUMBA_NUM_THREADS), "
            f"got {numba}"
        )
    if blas is not None and blas < 1:
        raise ValueError(f"blas threads must be at least 1, got {blas}")
    if blas and numba and oversubscribed(blas, numba):
        warnings.warn(
            f"{blas} BLAS x {numba} Numba threads exceed the {cores()} cores",
            OversubscriptionWarning,
            stacklevel=3,
        )
    with threadpoolctl.threadpool_limits(limits=blas, user_api="blas"):
        if numba is None:
            yield
            return
        numba_module = _numba()
        before = numba_module.get_num_threads()
        numba_module.set_num_threads(numba)
        try:
            yield
        finally:
            numba_module.set_num_threads(before)


def blas_threads():
    """Return the thread count of each loaded BLAS library, as a list."""
    return [
        lib["num_threads"]
        for lib in threadpoolctl.threadpool_info()
        if lib["user_api"] == "blas"
    ]


def threading_layer():
    """Return the threading layer Numba uses, or the configured one before use."""
    numba = sys.modules.get("numba")
    if numba is None:
        return "not loaded"
    try:
        return numba.threading_layer()
    except ValueError:
        return f"{numba.config.THREADING_LAYER} (not started)"


def cpu_model():
    """Return the CPU's model name."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def runtime_info():
    """Return a JSON-ready description of the machine and its thread pools.

    Numba's threads are described only if this process has loaded Numba
    (None otherwise); describing them does not load it.
    """
    numba = sys.modules.get("numba")
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cores": cores(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": metadata.version("numba"),
        "threadpoolctl": threadpoolctl.__version__,
        "numba_threads": numba.get_num_threads() if numba else None,
        "numba_max_threads": max_numba_threads() if numba else None,
        "threading_layer": threading_layer(),
        "threadpool_info": threadpoolctl.threadpool_info(),
        "env": {name: os.environ.get(name) for name in ENV_VARS},
    }


def git_commit(top=None):
    """Return hmnist's git commit, or None outside git.

    The commit ends in ``-dirty`` when a tracked file outside ``results/``
    has changed: a run that rewrites the committed results (``make
    results``) is still a run of the committed code.

    Parameters
    ----------
    top : str or Path, optional
        The work tree; by default the one this module is in.
    """
    top = Path(__file__).resolve().parent.parent if top is None else Path(top)
    try:
        commit = subprocess.run(
            ["git", "-C", str(top), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        changes = subprocess.run(
            ["git", "-C", str(top), "status", "--porcelain", "--untracked-files=no",
             "--", ".", ":(exclude)results"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if changes else commit
