"""threads.limit: BLAS and Numba threads set together and restored."""

import ast
import json
import os
import subprocess
import sys
import warnings

import numba
import numpy as np  # noqa: F401 (loads the BLAS threadpoolctl is to find)
import pytest
import threadpoolctl

from hmnist import threads
from hmnist.threads import OversubscriptionWarning

needs_two_numba_threads = pytest.mark.skipif(
    threads.max_numba_threads() < 2, reason="Numba's pool has a single thread"
)


def blas_counts():
    """Return each loaded BLAS library's thread count, per threadpoolctl."""
    return [
        lib["num_threads"]
        for lib in threadpoolctl.threadpool_info()
        if lib["user_api"] == "blas"
    ]


@pytest.fixture
def two_cores(monkeypatch):
    """Make the machine look like it has two cores."""
    monkeypatch.setattr(threads, "cores", lambda: 2)


def test_a_blas_library_is_loaded():
    assert blas_counts(), "threadpoolctl finds no BLAS: the limits test nothing"


def test_limit_one_thread_each_and_restore():
    blas_before, numba_before = blas_counts(), numba.get_num_threads()
    with threads.limit(blas=1, numba=1):
        assert blas_counts() == [1] * len(blas_before)
        assert threads.blas_threads() == [1] * len(blas_before)
        assert numba.get_num_threads() == 1
    assert blas_counts() == blas_before
    assert numba.get_num_threads() == numba_before


def test_limit_restores_after_an_exception():
    blas_before, numba_before = blas_counts(), numba.get_num_threads()
    with pytest.raises(KeyError):
        with threads.limit(blas=1, numba=1):
            raise KeyError("inside")
    assert blas_counts() == blas_before
    assert numba.get_num_threads() == numba_before


def test_none_leaves_both_alone():
    blas_before, numba_before = blas_counts(), numba.get_num_threads()
    with threads.limit():
        assert blas_counts() == blas_before
        assert numba.get_num_threads() == numba_before


@needs_two_numba_threads
def test_oversubscription_warns(two_cores):
    with pytest.warns(OversubscriptionWarning, match="2 cores"):
        with threads.limit(blas=2, numba=2):
            pass


@needs_two_numba_threads
@pytest.mark.parametrize("blas, numba_threads", [(1, 2), (2, 1), (None, 2)])
def test_no_warning_within_the_cores(two_cores, blas, numba_threads):
    with warnings.catch_warnings():
        warnings.simplefilter("error", OversubscriptionWarning)
        with threads.limit(blas=blas, numba=numba_threads):
            pass


def test_oversubscribed():
    assert threads.oversubscribed(threads.cores() + 1, 1)
    assert not threads.oversubscribed(1, 1)
    assert not threads.oversubscribed(None, None)


@pytest.mark.parametrize("numba_threads", [0, -1, threads.max_numba_threads() + 1])
def test_numba_threads_out_of_range(numba_threads):
    before = numba.get_num_threads()
    with pytest.raises(ValueError, match="numba threads"):
        with threads.limit(numba=numba_threads):
            pass
    assert numba.get_num_threads() == before


def test_blas_threads_below_one():
    with pytest.raises(ValueError, match="blas threads"):
        with threads.limit(blas=0):
            pass


def test_runtime_info_is_json_ready():
    info = json.loads(json.dumps(threads.runtime_info()))
    assert info["cores"] == threads.cores()
    assert info["numba_threads"] == numba.get_num_threads()
    assert "threadpool_info" in info


# A fresh process: the numba kernel warms up inside a limit of one BLAS
# thread, BLAS having started with two.
_WARM_UP_UNDER_A_LIMIT = """
import numpy as np, threadpoolctl
from hmnist import kernels
from hmnist.network import Network
kernel = kernels.get("numba")
with kernel.limit_threads(1):
    x, y = np.random.default_rng(0).random((40, 784)), np.zeros(40, np.int64)
    kernel.warm_up(Network([784, 30, 10]), x, y, "quadratic", 10)
    pools = threadpoolctl.threadpool_info()
print([(p["filepath"], p["num_threads"]) for p in pools if p["user_api"] == "blas"])
"""


def test_every_blas_library_the_numba_kernel_loads_is_under_its_limit():
    """Numba's first compile loads SciPy's OpenBLAS: it must load before the limit."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", _WARM_UP_UNDER_A_LIMIT],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    pools = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert pools
    assert [n for _, n in pools] == [1] * len(pools), pools


def test_git_commit_is_dirty_for_changed_code_not_for_changed_results(tmp_path):
    def git(*argv):
        subprocess.run(["git", "-C", str(tmp_path), *argv], check=True,
                       capture_output=True)  # fmt: skip

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "standard.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    clean = threads.git_commit(tmp_path)
    assert len(clean) == 40 and not clean.endswith("-dirty")

    (tmp_path / "results" / "standard.json").write_text('{"cells": []}')
    assert threads.git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert threads.git_commit(tmp_path) == f"{clean}-dirty"


def test_git_commit_outside_git_is_none(tmp_path):
    assert threads.git_commit(tmp_path) is None
