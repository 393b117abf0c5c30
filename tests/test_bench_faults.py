"""hmnist bench under real signals and concurrent runs, in child processes.

A results file must always be whole: after SIGINT it holds the finished
cells, after SIGKILL at any moment it is the previous version or a newer
one, and two runs at once never write into each other's files.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import write_mnist

from hmnist import bench

# Several cells of a second or so each, on tiny files: long enough to be
# killed in the middle of a run, short enough for the test suite.
ARGV = [
    "bench", "--kernels", "matmul", "--threads", "1",
    "--batch-sizes", "1", "2", "3", "4",
    "--sizes", "784,20,10", "--dtypes", "float64",
    "--samples", "3000", "--repeats", "8", "--peak-size", "32",
]  # fmt: skip
N_CELLS = 4


@pytest.fixture
def data_3000(tmp_path):
    """Return a folder of small MNIST-shaped files with 3,000 training images."""
    folder = tmp_path / "mnist"
    write_mnist(folder, n_train=3000, n_test=50)
    return folder


def start(data_dir, cwd, *extra):
    """Start ``hmnist bench`` in a child process; return the Popen."""
    argv = [sys.executable, "-m", "hmnist", *ARGV, "--data", str(data_dir), *extra]
    return subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_cells(path, n, process, timeout=120):
    """Wait until ``path`` holds at least ``n`` cells; fail if the run ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(bench.read_results(path)["cells"]) >= n:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    pytest.fail(f"no {n} cells in {path} after {timeout} s")


def test_sigint_saves_the_finished_cells_and_exits_130(data_3000, tmp_path):
    out = tmp_path / "r.json"
    process = start(data_3000, tmp_path, "--out", str(out))
    wait_for_cells(out, 1, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted" in err.strip().splitlines()[-1]
    assert 1 <= len(bench.read_results(out)["cells"]) < N_CELLS


@pytest.mark.parametrize("delay", [0.0, 0.13, 0.37, 0.71])
def test_sigkill_at_any_moment_leaves_a_whole_file(data_3000, tmp_path, delay):
    out = tmp_path / "r.json"
    process = start(data_3000, tmp_path, "--out", str(out))
    wait_for_cells(out, 1, process)
    before = len(bench.read_results(out)["cells"])
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    document = bench.read_results(out)
    assert len(document["cells"]) >= before
    # Only the finished file is left: a temporary one may remain, never a
    # half-written results file.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".r.json")]
    assert all(name.endswith(".tmp") for name in leftovers)


def test_two_runs_at_once_into_one_folder_keep_their_own_files(data_3000, tmp_path):
    runs = [start(data_3000, tmp_path) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (_, err) in zip(runs, outputs):
        assert run.returncode == 0, err
    files = sorted((tmp_path / "results").glob("bench-quick-*.json"))
    assert len(files) == 2
    pids = {str(run.pid) for run in runs}
    assert {f.stem.rsplit("-", 1)[-1] for f in files} == pids
    for path in files:
        assert len(bench.read_results(path)["cells"]) == N_CELLS


def test_two_runs_at_once_into_one_file_leave_a_whole_file(data_3000, tmp_path):
    out = tmp_path / "shared.json"
    runs = [start(data_3000, tmp_path, "--out", str(out)) for _ in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    # The last writer wins; what it wrote is whole.
    document = json.loads(out.read_text())
    assert len(document["cells"]) == N_CELLS
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
