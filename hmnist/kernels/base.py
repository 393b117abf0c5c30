"""The contract every backprop kernel keeps, and the shared mini-batch loop.

A kernel turns a network, a batch and a cost into gradients, and runs one
epoch of mini-batch SGD in place. Kernels differ only in how they compute;
given the same network, samples and order they must produce the same
weights to rounding, so that their timings compare equal work.
"""

import time

import numpy as np

from .. import threads


class Kernel:
    """Base class of the backprop kernels.

    Attributes
    ----------
    name : str
        The name users give on the command line and results record.
    pool : str
        The thread pool doing the work: ``"blas"`` (threadpoolctl limits
        it), ``"numba"`` (``numba.set_num_threads``), or a peer's own name.
    """

    name = ""
    pool = "blas"

    def gradients(self, net, x, y, cost):
        """Return the batch-mean gradients of the cost.

        Parameters
        ----------
        net : Network
            Read only.
        x : ndarray, shape (m, sizes[0]), dtype ``net.dtype``
            One sample per row.
        y : ndarray of int, shape (m,)
            Labels, 0 to ``sizes[-1] - 1``.
        cost : {"quadratic", "cross-entropy"}

        Returns
        -------
        grad_w, grad_b : list of ndarray
            Shapes of ``net.weights`` and ``net.biases``: the mean over
            the batch of dC/dW and dC/db.
        """
        raise NotImplementedError

    def train_epoch(self, net, x, y, order, batch_size, eta, cost):
        """Run one epoch of mini-batch SGD on ``net`` in place.

        Parameters
        ----------
        net : Network
            Updated in place.
        x : ndarray, shape (n_samples, sizes[0]), dtype ``net.dtype``
        y : ndarray of int, shape (n_samples,)
        order : ndarray of int, shape (n_samples,)
            Sample indices in the order they are taken; consecutive runs of
            ``batch_size`` form the mini-batches, the last may be smaller.
        batch_size : int
        eta : float
            Learning rate; each batch does ``w -= eta * mean(grad_w)``.
        cost : {"quadratic", "cross-entropy"}
        """
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            grad_w, grad_b = self.gradients(net, x[batch], y[batch], cost)
            for w, b, gw, gb in zip(net.weights, net.biases, grad_w, grad_b):
                w -= eta * gw
                b -= eta * gb

    def warm_up(self, net, x, y, cost, batch_size=10, n_samples=None):
        """Run a short epoch on a copy of ``net``; return its seconds.

        This pays one-off costs (JIT compilation, BLAS start-up, thread
        pool creation) outside any timed measurement.

        Parameters
        ----------
        net : Network
            Not changed.
        x : ndarray, shape (n_train, sizes[0]), dtype ``net.dtype``
        y : ndarray of int, shape (n_train,)
        cost : {"quadratic", "cross-entropy"}
        batch_size : int
        n_samples : int, optional
            The samples each epoch timed afterwards takes from ``x`` (by
            default all of them), for a kernel whose compiled code
            depends on it; this short epoch does not use it.

        Returns
        -------
        float
        """
        n = min(len(x), 2 * batch_size)
        start = time.perf_counter()
        self.train_epoch(net.copy(), x[:n], y[:n], np.arange(n), batch_size, 0.1, cost)
        return time.perf_counter() - start

    def limit_threads(self, n):
        """Return a context manager running this kernel on ``n`` threads.

        ``n`` counts threads of the kernel's own pool: BLAS for a ``blas``
        kernel; Numba's for a ``numba`` kernel, BLAS then held at 1 so the
        two pools do not compete. A peer overrides this with its
        framework's own knob.
        """
        if self.pool == "blas":
            return threads.limit(blas=n)
        if self.pool == "numba":
            return threads.limit(blas=1, numba=n)
        raise NotImplementedError(f"kernel {self.name!r} sets no threads")

    def info(self):
        """Return a dict describing the kernel's runtime, for results files."""
        return {"name": self.name, "pool": self.pool}
