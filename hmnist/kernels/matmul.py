"""The ``matmul`` kernel: a whole mini-batch as one matrix, BLAS does the work.

The equations of ``loop.py`` with samples as rows: ``A^0 = X`` is
``(m, n_in)`` and for each layer::

    A^l = sigmoid(A^(l-1) (W^l)^T + b^l)
    Delta^l = (Delta^(l+1) W^(l+1)) * A^l (1 - A^l)
    dC/dW^l = (Delta^l)^T A^(l-1) / m,   dC/db^l = mean of Delta^l's rows

This is the "fully matrix-based" backprop of the Haskell original. Its
speed and its use of threads are those of the BLAS NumPy loaded; at a
batch of 10 the matrices are too small for BLAS threads to pay.
"""

from .. import costs
from ..network import sigmoid
from .base import Kernel


class MatmulKernel(Kernel):
    """Batch backprop with matrix products (NumPy's BLAS)."""

    name = "matmul"

    def gradients(self, net, x, y, cost):
        """Return batch-mean gradients; see :meth:`Kernel.gradients`."""
        activations = [x]
        for w, b in zip(net.weights, net.biases):
            # (m, n_in) @ (n_in, n_out)
            activations.append(sigmoid(activations[-1] @ w.T + b))

        m = len(x)
        target = costs.one_hot(y, net.sizes[-1], net.dtype)
        delta = costs.delta(cost, activations[-1], target)
        grad_w, grad_b = [None] * net.n_layers, [None] * net.n_layers
        for l in range(net.n_layers - 1, -1, -1):
            # (n_out, m) @ (m, n_in)
            grad_w[l] = delta.T @ activations[l] / m
            grad_b[l] = delta.sum(axis=0) / m
            if l > 0:
                a = activations[l]
                # (m, n_out) @ (n_out, n_in)
                delta = (delta @ net.weights[l]) * a * (1 - a)
        return grad_w, grad_b
