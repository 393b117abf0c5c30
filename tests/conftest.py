"""Shared fixtures: tiny IDX files written by the tests, and the real data."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from hmnist.data import FILES


def idx_bytes(array, type_code=0x08):
    """Return ``array`` (uint8) encoded as an IDX file's bytes."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, type_code, array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.tobytes()


def write_idx(path, content, gz=True):
    """Write IDX ``content`` bytes to ``path`` (+ ``.gz`` when ``gz``)."""
    path = Path(path)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(content))
    else:
        path.write_bytes(content)
    return path


def write_mnist(folder, n_train=120, n_test=30, seed=0, gz=True):
    """Write four small random MNIST-shaped IDX files into ``folder``."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28)),
        "train_labels": rng.integers(0, 10, n_train),
        "test_images": rng.integers(0, 256, (n_test, 28, 28)),
        "test_labels": rng.integers(0, 10, n_test),
    }
    for key, array in arrays.items():
        write_idx(folder / FILES[key], idx_bytes(array), gz=gz)
    return arrays


@pytest.fixture
def tiny_mnist(tmp_path):
    """Return a folder with four small gzip'd MNIST-shaped files."""
    folder = tmp_path / "mnist"
    write_mnist(folder)
    return folder


@pytest.fixture(scope="session")
def real_data_dir():
    """Return $HMNIST_DATA, or skip when the real MNIST files are not there."""
    folder = os.environ.get("HMNIST_DATA")
    if not folder or not Path(folder).is_dir():
        pytest.skip("real MNIST not found: set HMNIST_DATA to its folder")
    return Path(folder)


@pytest.fixture
def run_hmnist(capsys):
    """Return ``run(argv) -> (exit code, stdout, stderr)`` of ``hmnist`` in-process."""
    from hmnist import cli

    def run(argv):
        try:
            code = cli.main(argv)
        except SystemExit as exit_info:  # argparse's usage errors
            code = exit_info.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def model(real_data_dir, tmp_path_factory):
    """Return ``(path, net)`` of a [784, 30, 10] net trained one quick epoch."""
    from hmnist import kernels
    from hmnist.data import load_mnist
    from hmnist.network import Network
    from hmnist.trainer import train

    data = load_mnist(real_data_dir, train_size=10_000)
    net = Network([784, 30, 10], init="scaled", seed=0)
    train(net, kernels.get("matmul"), data.train, epochs=1, batch_size=10,
          eta=3.0, cost="quadratic", seed=0, warm_up=False)  # fmt: skip
    path = tmp_path_factory.mktemp("model") / "model.npz"
    net.save(path)
    return path, net


# Small epochs that exercise the edge cases of the mini-batch loop.
SMALL_EPOCHS = pytest.mark.parametrize(
    "sizes, n_samples, batch_size",
    [
        ([12, 7, 5], 25, 10),  # last batch of 5
        ([12, 7, 5], 7, 1),  # batches of one sample
        ([12, 5], 23, 10),  # no hidden layer, last batch of 3
        ([12, 6, 5, 4], 23, 4),  # two hidden layers, last batch of 3
        ([12, 7, 5], 6, 10),  # one batch, smaller than batch_size
    ],
    ids=["partial-batch", "batch-1", "no-hidden", "deeper", "short-epoch"],
)


def make_batch(n, n_in, n_out, seed=0, dtype="float64", density=1.0):
    """Return ``n`` random inputs in [0, 1) (a ``density`` of them nonzero), labels."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, n_in)) * (rng.random((n, n_in)) < density)
    return np.ascontiguousarray(x, dtype=dtype), rng.integers(0, n_out, n)


def rel_diff(got, want):
    """Return ``max|got - want| / max|want|`` over lists of arrays."""
    diff = max(np.max(np.abs(g.astype(np.float64) - w)) for g, w in zip(got, want))
    return diff / max(np.max(np.abs(w)) for w in want)
