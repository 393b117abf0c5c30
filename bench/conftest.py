"""Fixtures of the pytest-benchmark files: the real MNIST, one copy per dtype."""

import functools
import os
from pathlib import Path

import pytest

from hmnist import bench


@pytest.fixture(scope="session")
def mnist():
    """Return ``load(dtype) -> (train, test)``; skip without $HMNIST_DATA."""
    folder = os.environ.get("HMNIST_DATA")
    if not folder or not Path(folder).is_dir():
        pytest.skip("real MNIST not found: set HMNIST_DATA to its folder")
    return functools.lru_cache(maxsize=1)(functools.partial(bench.load_samples, folder))
