"""The ``jax`` kernel: a whole epoch in one jitted ``lax.scan``.

What a JAX user writes for the book's network: the cost as a function of
the parameters, ``jax.grad`` for backprop, and the SGD update
``p - eta * g`` as the body of a ``lax.scan`` over the mini-batches, the
whole epoch compiled by ``jax.jit``. The cost is the book's, summed over
the batch and divided by its size ``m``, so ``eta * g`` is the book's
``eta / m * sum(grad_w)``:

- quadratic: ``0.5 * sum((sigmoid(z) - y) ** 2) / m``;
- cross-entropy: ``sum(softplus(z) - y z) / m``, which is the book's
  ``-sum(y ln a + (1 - y) ln(1 - a))`` for ``a = sigmoid(z)`` written on
  ``z``, so that its gradient is ``sigmoid(z) - y``, the book's ``a - y``.

``sigmoid`` is ``jax.nn.sigmoid``, whose derivative is ``a (1 - a)``.

The scan runs over the full batches, ``order`` cut to
``(n_full, batch_size)`` sample indices; when ``batch_size`` does not
divide the samples, the smaller last batch is one more step after the
scan, inside the same compiled function, with its own size as ``m``.
Each step gathers its batch from ``x`` on the device; gathering the
whole epoch into ``(n_batches, batch_size, 784)`` first copies the data
set every epoch, and measured 25 to 40 % slower.

A scan's length and the last batch's size are part of the compiled
shape, so an epoch compiles once per number of samples (with the cost,
dtype, shape of the data, batch size and network). The benchmark tells
:meth:`JaxKernel.warm_up` how many samples it will time, so that the
timed epochs run code compiled beforehand; the trainer's warm-up
compiles for every sample of ``x``, which each of its epochs takes.
Any other number of samples compiles inside the epoch that first uses
it.

The data go to the device once and stay there, as a JAX user would keep
them: the kernel reuses the device copy of ``x`` and ``y`` while it is
given arrays over the same memory (same address, shape, strides and
dtype; the trainer passes the same arrays every epoch), so a change made
in place to that memory between epochs is not seen: pass new arrays
instead. The kernel holds the last arrays and their copy until it is
given others. Moving MNIST (60,000 x 784 float64, 376 MB) took about a
second here, and :meth:`JaxKernel.warm_up` pays it.

Importing this module enables float64 in JAX (``jax_enable_x64``) for the
whole process: without it JAX silently computes a float64 network in
float32. It also starts JAX's CPU backend, which fixes its threads.

Threads: XLA sizes its CPU thread pool to the cores the process may run
on when the backend starts, and offers no way to change it afterwards.
The ``intra_op_parallelism_threads`` often quoted for ``XLA_FLAGS`` is
not an XLA flag (XLA rejects it, or ignores it without the dashes), and
``--xla_cpu_multi_thread_eigen=false`` only makes the matrix products
single-threaded. So :meth:`JaxKernel.limit_threads` accepts only the
count the process started with; JAX on ``n`` threads runs in a process
started on ``n`` cores (``taskset -c 0-(n-1)``, or
``os.sched_setaffinity`` before JAX is imported), which is how
``hmnist bench`` measures each ``jax`` cell.

What it leaves out: ``optax``, ``flax`` and other libraries on top of
JAX, and accelerators.
"""

import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402  (after x64 is enabled)
import numpy as np  # noqa: E402
import threadpoolctl  # noqa: E402
from jax import lax  # noqa: E402

from .. import costs, threads  # noqa: E402
from ..errors import HmnistError  # noqa: E402
from .base import Kernel  # noqa: E402


def _outputs(params, xb):
    """Return the output layer's weighted inputs ``z``, ``(m, n_out)``."""
    a = xb
    for w, b in params[:-1]:
        # (m, n_in) @ (n_in, n_out)
        a = jax.nn.sigmoid(a @ w.T + b)
    w, b = params[-1]
    # (m, n_in) @ (n_in, n_out)
    return a @ w.T + b


def _loss(params, xb, target, cost):
    """Return the cost summed over the batch, divided by its size ``m``."""
    z = _outputs(params, xb)
    if cost == "quadratic":
        per_unit = 0.5 * (jax.nn.sigmoid(z) - target) ** 2
    else:
        per_unit = jax.nn.softplus(z) - target * z
    return jnp.sum(per_unit) / xb.shape[0]


def _epoch(params, x, y, batches, last, eta, cost):
    """Return the parameters after SGD on every row of ``batches``, then ``last``.

    ``batches`` is ``(n_full, batch_size)`` sample indices, one full
    mini-batch per row, run by ``lax.scan``; ``last`` is the smaller last
    batch's indices, ``(r,)``, run once more after the scan, or ``(0,)``
    when ``batch_size`` divides the samples.
    """
    n_out = params[-1][1].shape[0]
    grad = jax.grad(_loss)

    def step(params, batch):
        """Return the parameters after the mini-batch ``batch``, and nothing."""
        target = jax.nn.one_hot(y[batch], n_out, dtype=x.dtype)
        g = grad(params, x[batch], target, cost)
        return jax.tree.map(lambda p, dp: p - eta * dp, params, g), None

    params, _ = lax.scan(step, params, batches)
    if last.shape[0]:
        params, _ = step(params, last)
    return params


def _gradients(params, x, target, cost):
    """Return dC/dW and dC/db, batch means, for the whole of ``x``."""
    return jax.grad(_loss)(params, x, target, cost)


_epoch_jit = jax.jit(_epoch, static_argnames="cost")
_gradients_jit = jax.jit(_gradients, static_argnames="cost")


def _pool_threads():
    """Return the threads of XLA's CPU pool, counted where Linux shows them."""
    jax.devices("cpu")
    try:
        tasks = os.listdir("/proc/self/task")
        names = []
        for task in tasks:
            with open(f"/proc/self/task/{task}/comm") as f:
                names.append(f.read().strip())
    except OSError:
        names = []
    return sum(name.startswith("tf_XLAEigen") for name in names) or threads.cores()


XLA_THREADS = _pool_threads()


class JaxKernel(Kernel):
    """``jax.grad`` and SGD in a scan over the epoch, one compiled call.

    Attributes
    ----------
    threads : int
        XLA's CPU threads in this process, fixed when JAX started.
    compile_seconds : float or None
        Seconds the last :meth:`warm_up` spent compiling.
    transfer_seconds : float or None
        Seconds the last move of the data to the device took.
    """

    name = "jax"
    pool = "jax"

    def __init__(self):
        self.threads = XLA_THREADS
        self.compile_seconds = None
        self.transfer_seconds = None
        self._compiled = {}
        self._data = None

    def gradients(self, net, x, y, cost):
        """Return the batch-mean gradients by ``jax.grad``.

        See :meth:`Kernel.gradients`.
        """
        costs.check(cost)
        target = costs.one_hot(y, net.sizes[-1], net.dtype)
        x = np.asarray(x, net.dtype)
        grads = _gradients_jit(_params(net), x, target, cost=cost)
        return [np.asarray(w) for w, _ in grads], [np.asarray(b) for _, b in grads]

    def train_epoch(self, net, x, y, order, batch_size, eta, cost):
        """Run one epoch in compiled code, then copy the weights back.

        See :meth:`Kernel.train_epoch`.
        """
        costs.check(cost)
        params = _params(net)
        x, y = self._device_data(net, x, y)
        batches, last = _plan(order, batch_size)
        eta = np.asarray(eta, net.dtype)
        run = self._compile(params, x, y, batches, last, eta, cost)
        params = run(params, x, y, batches, last, eta)
        for (w, b), (new_w, new_b) in zip(zip(net.weights, net.biases), params):
            w[...] = np.asarray(new_w)
            b[...] = np.asarray(new_b)

    def _device_data(self, net, x, y):
        """Return ``x`` and ``y`` on the device, reusing copies of the same memory."""
        key = (_memory(x), _memory(y), net.dtype.name)
        if self._data is None or self._data[0] != key:
            start = time.perf_counter()
            x_dev = jnp.asarray(np.asarray(x, net.dtype))
            y_dev = jnp.asarray(np.asarray(y, np.int64))
            jax.block_until_ready((x_dev, y_dev))
            self.transfer_seconds = time.perf_counter() - start
            # x and y are kept so that their memory is not reused meanwhile.
            self._data = (key, x, y, x_dev, y_dev)
        return self._data[3:]

    def _compile(self, params, x, y, batches, last, eta, cost):
        """Return the compiled epoch for these shapes, compiling it once."""
        key = (
            cost, x.dtype.name, x.shape, batches.shape, last.shape, _shapes(params)
        )  # fmt: skip
        if key not in self._compiled:
            lowered = _epoch_jit.lower(params, x, y, batches, last, eta, cost=cost)
            self._compiled[key] = lowered.compile()
        return self._compiled[key]

    def warm_up(self, net, x, y, cost, batch_size=10, n_samples=None):
        """Move ``x`` and ``y`` to the device and compile the epoch to be timed.

        A compiled epoch serves one number of samples in batches of
        ``batch_size``: the scan's length and the last batch's size are
        part of its shape. After this, an epoch over any ``n_samples`` of
        these arrays, in any order, runs compiled code on data already on
        the device. ``net`` is not changed.

        Parameters
        ----------
        net : Network
            Gives the shapes and dtype of the parameters.
        x : ndarray, shape (n_train, sizes[0]), dtype ``net.dtype``
        y : ndarray of int, shape (n_train,)
        cost : {"quadratic", "cross-entropy"}
        batch_size : int
        n_samples : int, optional
            The samples each timed epoch takes from ``x``; by default all
            of them, as the trainer's epochs do.

        Returns
        -------
        float
            Seconds spent moving the data and compiling.
        """
        costs.check(cost)
        n_samples = len(x) if n_samples is None else n_samples
        if not 0 <= n_samples <= len(x):
            raise ValueError(f"n_samples must be 0..{len(x)}, got {n_samples}")
        begin = time.perf_counter()
        self._device_data(net, x, y)
        start = time.perf_counter()
        params = _params(net)
        xs = jax.ShapeDtypeStruct(x.shape, net.dtype)
        ys = jax.ShapeDtypeStruct(y.shape, np.int64)
        eta = jax.ShapeDtypeStruct((), net.dtype)
        batches, last = _plan(np.arange(n_samples), batch_size)
        self._compile(params, xs, ys, batches, last, eta, cost)
        self.compile_seconds = time.perf_counter() - start
        return time.perf_counter() - begin

    def limit_threads(self, n):
        """Return a context manager for ``n`` threads, if JAX started with ``n``.

        XLA's threads are fixed per process, so this only holds NumPy's
        BLAS at 1 while JAX keeps the threads it has.

        Raises
        ------
        HmnistError
            When ``n`` is not the count JAX started with.
        """
        if n != self.threads:
            cpus = "0" if n == 1 else f"0-{n - 1}"
            raise HmnistError(
                f"JAX's threads are fixed per process: this one has {self.threads} "
                "(XLA sized its pool to the cores the process could use when JAX "
                f"started); to run JAX on {n}, start a process on {n} core(s), "
                f"e.g. with taskset -c {cpus}"
            )
        return threads.limit(blas=1)

    def info(self):
        """Return JAX's version, XLA threads and the loaded thread pools."""
        return {
            **super().info(),
            "jax": jax.__version__,
            "xla_threads": self.threads,
            "xla_flags": os.environ.get("XLA_FLAGS"),
            "x64": bool(jax.config.jax_enable_x64),
            "compile_seconds": self.compile_seconds,
            "transfer_seconds": self.transfer_seconds,
            "threadpool_info": threadpoolctl.threadpool_info(),
        }


def _params(net):
    """Return ``net``'s parameters as a tuple of ``(w, b)`` device arrays."""
    return tuple(
        (jnp.asarray(w), jnp.asarray(b)) for w, b in zip(net.weights, net.biases)
    )


def _memory(a):
    """Return where an array's data lie and how: address, shape, strides, dtype."""
    return (a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str)


def _shapes(params):
    """Return the shapes of a parameter tuple, a hashable key."""
    return tuple((w.shape, b.shape) for w, b in params)


def _plan(order, batch_size):
    """Return ``order`` as full batch rows, ``(n_full, batch_size)``, and the rest.

    The rest, ``(len(order) % batch_size,)``, is the smaller last batch;
    it has no samples when ``batch_size`` divides ``len(order)``.
    """
    order = np.asarray(order, np.int64)
    n_full = len(order) // batch_size
    split = n_full * batch_size
    return order[:split].reshape(n_full, batch_size), order[split:]
