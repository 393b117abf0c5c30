"""The ``loop`` kernel: backprop one sample at a time, the book's chapter 1.

For each sample, with ``a^0 = x`` and layers ``l = 1..L``::

    z^l = W^l a^(l-1) + b^l,      a^l = sigmoid(z^l)
    delta^L = dC/dz^L                        (costs.delta)
    delta^l = (W^(l+1))^T delta^(l+1) * a^l (1 - a^l)
    dC/dW^l = delta^l (a^(l-1))^T,  dC/db^l = delta^l

and the batch gradient is the mean over samples. It is the reference the
other kernels are checked against, and the slow end of every speedup
table: NumPy calls on vectors, one sample per call.
"""

import numpy as np

from .. import costs
from ..network import sigmoid
from .base import Kernel


class LoopKernel(Kernel):
    """Per-sample backprop summed over the mini-batch (book, chapter 1)."""

    name = "loop"

    def gradients(self, net, x, y, cost):
        """Return batch-mean gradients; see :meth:`Kernel.gradients`."""
        grad_w = [np.zeros_like(w) for w in net.weights]
        grad_b = [np.zeros_like(b) for b in net.biases]
        targets = costs.one_hot(y, net.sizes[-1], net.dtype)
        for sample, target in zip(x, targets):
            dw, db = backprop(net.weights, net.biases, sample, target, cost)
            for l in range(net.n_layers):
                grad_w[l] += dw[l]
                grad_b[l] += db[l]
        m = len(x)
        return [g / m for g in grad_w], [g / m for g in grad_b]


def backprop(weights, biases, x, target, cost):
    """Return one sample's dC/dW and dC/db lists for input ``x`` ``(n_in,)``."""
    activations = [x]
    for w, b in zip(weights, biases):
        # (n_out, n_in) @ (n_in,)
        activations.append(sigmoid(w @ activations[-1] + b))

    a = activations[-1]
    delta = costs.delta(cost, a[None, :], target[None, :])[0]
    dw, db = [None] * len(weights), [None] * len(weights)
    for l in range(len(weights) - 1, -1, -1):
        dw[l] = np.outer(delta, activations[l])
        db[l] = delta
        if l > 0:
            a = activations[l]
            # (n_in, n_out) @ (n_out,)
            delta = (weights[l].T @ delta) * a * (1 - a)
    return dw, db
