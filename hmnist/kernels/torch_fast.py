"""The ``torch-fast`` kernel: hand-written batch backprop on PyTorch tensors.

The equations of ``matmul.py`` (samples as rows, ``A^0 = X``)::

    A^l = sigmoid(A^(l-1) (W^l)^T + b^l)
    Delta^L = costs.delta(A^L, Y)
    Delta^l = (Delta^(l+1) W^(l+1)) * A^l (1 - A^l)
    W^l -= eta / m * (Delta^l)^T A^(l-1),   b^l -= eta / m * sum of Delta^l's rows

run under ``torch.no_grad()`` with every intermediate in a buffer
allocated once per epoch: the batch is gathered with ``index_select(out=)``,
``addmm(out=)`` and ``sigmoid_`` go forward, and ``addmm_`` updates each
weight matrix in place with ``alpha = -eta / m``. Every delta is computed
before any weight of the batch changes, so the update sequence is SGD's.
It is the fastest honest PyTorch form of the book's algorithm; the
``torch`` kernel is the ordinary autograd form of the same computation.

Why eager and not ``torch.compile``: at a batch of 10 a step is about
twenty small operations. Compiling the step (Inductor's C++ backend,
offline) took 55 s for one dtype and batch shape (the last, smaller batch
of an epoch is another shape), and on this 2-core machine the compiled
epoch of ``[784, 100, 10]`` on one thread was no faster than eager (3.0 to
3.5 s against 2.5 to 3.0 s per 60,000 samples); eager also needs no C++
compiler at run time.

What it leaves out: autograd, ``torch.optim``, and the CUDA device. The
threads are those of the ``torch`` kernel: ``torch.set_num_threads``, with
NumPy's BLAS held at 1.
"""

import numpy as np
import torch

from .. import costs
from .torch_eager import TorchKernel


def _buffers(net, batch_size):
    """Return the per-layer activation, delta and scratch buffers of a batch."""
    dtype = _dtype(net)
    acts = [torch.empty(batch_size, n, dtype=dtype) for n in net.sizes[1:]]
    deltas = [torch.empty_like(a) for a in acts]
    scratch = [torch.empty_like(a) for a in acts]
    return acts, deltas, scratch


def _dtype(net):
    """Return the torch dtype of ``net``'s parameters."""
    return {"float64": torch.float64, "float32": torch.float32}[net.dtype.name]


def _forward_backward(weights, biases, xb, tb, acts, deltas, scratch, quadratic):
    """Fill ``acts`` and ``deltas`` (``(m, n_l)`` views) for the batch ``xb``."""
    a_in = xb
    for w, b, a in zip(weights, biases, acts):
        # (m, n_in) @ (n_in, n_out)
        torch.addmm(b, a_in, w.t(), out=a)
        a.sigmoid_()
        a_in = a

    # Output error: a - y, times a (1 - a) for the quadratic cost.
    a, d = acts[-1], deltas[-1]
    torch.sub(a, tb, out=d)
    if quadratic:
        s = scratch[-1]
        torch.neg(a, out=s).add_(1)
        d.mul_(a).mul_(s)

    # Errors of the hidden layers, through the weights of the batch's start.
    for l in range(len(weights) - 1, 0, -1):
        a, d, s = acts[l - 1], deltas[l - 1], scratch[l - 1]
        # (m, n_out) @ (n_out, n_in)
        torch.mm(deltas[l], weights[l], out=d)
        torch.neg(a, out=s).add_(1)
        d.mul_(a).mul_(s)


def _update(weights, biases, ins, deltas, sums, rate):
    """Apply ``W -= rate Delta^T A_in`` and ``b -= rate sum(Delta)`` in place."""
    for w, b, a, d, s in zip(weights, biases, ins, deltas, sums):
        # (n_out, m) @ (m, n_in)
        w.addmm_(d.t(), a, alpha=-rate)
        torch.sum(d, 0, out=s)
        b.sub_(s, alpha=rate)


class TorchFastKernel(TorchKernel):
    """Hand-written batch backprop with in-place PyTorch updates."""

    name = "torch-fast"

    def gradients(self, net, x, y, cost):
        """Return the batch-mean gradients by hand-written backprop.

        See :meth:`Kernel.gradients`.
        """
        quadratic = costs.check(cost) == "quadratic"
        m = len(x)
        weights = [torch.from_numpy(w) for w in net.weights]
        biases = [torch.from_numpy(b) for b in net.biases]
        xb = torch.from_numpy(np.ascontiguousarray(x, net.dtype))
        tb = torch.from_numpy(costs.one_hot(y, net.sizes[-1], net.dtype))
        acts, deltas, scratch = _buffers(net, m)
        with torch.no_grad():
            _forward_backward(weights, biases, xb, tb, acts, deltas, scratch, quadratic)
            ins = [xb] + acts[:-1]
            # (n_out, m) @ (m, n_in)
            grad_w = [(d.t() @ a) / m for d, a in zip(deltas, ins)]
            grad_b = [d.sum(0) / m for d in deltas]
        return [g.numpy() for g in grad_w], [g.numpy() for g in grad_b]

    def train_epoch(self, net, x, y, order, batch_size, eta, cost):
        """Run one epoch of in-place SGD on tensors, then copy the weights back.

        See :meth:`Kernel.train_epoch`.
        """
        quadratic = costs.check(cost) == "quadratic"
        weights = [torch.tensor(w) for w in net.weights]
        biases = [torch.tensor(b) for b in net.biases]
        inputs = torch.from_numpy(np.ascontiguousarray(x, net.dtype))
        targets = torch.from_numpy(costs.one_hot(y, net.sizes[-1], net.dtype))
        order = torch.from_numpy(np.asarray(order, np.int64))
        xbuf = torch.empty(batch_size, net.sizes[0], dtype=inputs.dtype)
        tbuf = torch.empty(batch_size, net.sizes[-1], dtype=inputs.dtype)
        bufs = _buffers(net, batch_size)
        sums = [torch.empty_like(b) for b in biases]

        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                m = len(batch)
                xb = torch.index_select(inputs, 0, batch, out=xbuf[:m])
                tb = torch.index_select(targets, 0, batch, out=tbuf[:m])
                acts_m, deltas_m, scratch_m = ([t[:m] for t in ts] for ts in bufs)
                _forward_backward(
                    weights, biases, xb, tb, acts_m, deltas_m, scratch_m, quadratic
                )
                _update(weights, biases, [xb] + acts_m[:-1], deltas_m, sums, eta / m)

        for w, b, new_w, new_b in zip(net.weights, net.biases, weights, biases):
            w[...] = new_w.numpy()
            b[...] = new_b.numpy()
