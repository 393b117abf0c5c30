"""The one SGD trainer every kernel shares.

Per epoch: a seeded permutation of the training samples, one call of
``kernel.train_epoch`` (the kernel runs every mini-batch), then the test
accuracy. Training and evaluation are timed apart. The trainer returns
numbers and never prints; a caller that wants progress passes
``on_epoch``.
"""

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import costs
from .errors import DivergenceError

# The shuffle draws from its own stream of the run's seed, so the network's
# initial weights and the sample order are independent of each other.
_SHUFFLE_STREAM = 1


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (the book's names).

    Attributes
    ----------
    sizes : tuple of int
        Neurons per layer, e.g. ``(784, 30, 10)``.
    epochs : int
    batch_size : int
        Mini-batch size ``m``; the last batch of an epoch may be smaller.
    eta : float
        Learning rate.
    cost : {"quadratic", "cross-entropy"}
    init : {"standard", "scaled"}
    dtype : {"float64", "float32"}
    seed : int
        Seeds the initial weights and every epoch's shuffle.
    train_size : int
        How many of the 60,000 training images train (the book: 50,000).
    kernel : str
        Name of the backprop kernel.
    """

    sizes: tuple = (784, 30, 10)
    epochs: int = 30
    batch_size: int = 10
    eta: float = 3.0
    cost: str = "quadratic"
    init: str = "standard"
    dtype: str = "float64"
    seed: int = 0
    train_size: int = 50_000
    kernel: str = "numba"

    def as_dict(self):
        """Return the configuration as a JSON-ready dict."""
        return {**asdict(self), "sizes": list(self.sizes)}


@dataclass
class EpochResult:
    """What one epoch gave: test correct count and seconds."""

    epoch: int
    correct: int
    total: int
    train_seconds: float
    eval_seconds: float

    @property
    def accuracy(self):
        """Return the fraction of test samples classified correctly."""
        return self.correct / self.total if self.total else float("nan")

    def as_dict(self):
        """Return the epoch as a JSON-ready dict, accuracy included."""
        return {**asdict(self), "accuracy": self.accuracy}


@dataclass
class History:
    """Every epoch of a run, and the kernel's one-off warm-up seconds."""

    warmup_seconds: float = 0.0
    epochs: list = field(default_factory=list)

    def as_dict(self):
        """Return the history as a JSON-ready dict."""
        return {
            "warmup_seconds": self.warmup_seconds,
            "epochs": [e.as_dict() for e in self.epochs],
        }


def shuffles(seed, n_samples):
    """Yield the sample order of epoch 0, 1, ...: seeded permutations."""
    rng = np.random.default_rng([seed, _SHUFFLE_STREAM])
    while True:
        yield rng.permutation(n_samples)


def train(net, kernel, train_data, *, epochs, batch_size, eta, cost, seed,
          test_data=None, on_epoch=None, warm_up=True):  # fmt: skip
    """Train ``net`` in place with mini-batch SGD and return its history.

    Parameters
    ----------
    net : Network
        Updated in place.
    kernel : Kernel
        Runs each epoch (``kernel.train_epoch``).
    train_data : tuple of ndarray
        ``x`` ``(n_samples, sizes[0])`` in ``net.dtype``, ``y`` ``(n_samples,)``.
    epochs, batch_size : int
    eta : float
    cost : {"quadratic", "cross-entropy"}
    seed : int
        Seeds the per-epoch permutations.
    test_data : tuple of ndarray, optional
        ``(x, y)`` scored after every epoch by ``net.evaluate``: ``x`` in
        [0, 1] or as uint8 pixels. Without it ``correct`` and ``total`` are 0.
    on_epoch : callable, optional
        Called as ``on_epoch(result, history)`` when an epoch is finished.
    warm_up : bool
        Run the kernel's untimed warm-up (JIT compile) first.

    Raises
    ------
    DivergenceError
        When an epoch leaves NaN or inf in the weights; ``net`` then holds
        those weights, so a caller must not save it.

    Notes
    -----
    ``net.evaluate`` runs on NumPy's BLAS. For a kernel with threads of its
    own, hold BLAS at 1 around the call (``kernel.limit_threads(n)`` or
    ``threads.limit(blas=1, numba=n)``): otherwise the BLAS threads the
    evaluation woke busy-wait into the next epoch on the kernel's cores.
    """
    costs.check(cost)
    x, y = train_data
    history = History()
    if warm_up:
        history.warmup_seconds = kernel.warm_up(net, x, y, cost, batch_size)
    orders = shuffles(seed, len(x))
    for epoch in range(epochs):
        order = next(orders)
        start = time.perf_counter()
        kernel.train_epoch(net, x, y, order, batch_size, eta, cost)
        train_seconds = time.perf_counter() - start
        if not net.is_finite():
            raise DivergenceError(
                f"epoch {epoch}: the weights became NaN or infinite "
                f"(eta {eta} is too large for this network)"
            )
        start = time.perf_counter()
        correct, total = 0, 0
        if test_data is not None:
            correct, total = net.evaluate(*test_data), len(test_data[1])
        result = EpochResult(
            epoch, correct, total, train_seconds, time.perf_counter() - start
        )
        history.epochs.append(result)
        if on_epoch is not None:
            on_epoch(result, history)
    return history
