"""The ``torch`` kernel: the network as a PyTorch user would write it.

``nn.Linear`` layers with sigmoid activations, a cost built from tensor
operations, ``loss.backward()`` and ``torch.optim.SGD(lr=eta)``, all in
eager mode. It is the peer that answers "what does the ordinary framework
code cost?", so it keeps the framework's idioms and overheads: autograd
builds a graph for every mini-batch, the optimizer walks its parameter
list, and no buffer is reused.

The cost is the book's, summed over the batch and divided by ``m`` (the
true size of the batch, so the last, smaller batch is right too); SGD's
``w -= lr * grad`` is then the book's ``w -= eta / m * sum(grad_w)``:

- quadratic: ``0.5 * sum((sigmoid(z) - y) ** 2) / m``;
- cross-entropy: ``binary_cross_entropy_with_logits(z, y, "sum") / m``,
  the book's ``-sum(y ln a + (1 - y) ln(1 - a))`` written on ``z`` so that
  autograd's output error is ``sigmoid(z) - y``, the book's ``a - y``,
  without a division by ``a (1 - a)``.

Threads: ``torch.set_num_threads`` sets PyTorch's intra-op pool (OpenMP,
and the MKL it links); NumPy's BLAS is held at 1 meanwhile, since the two
libraries are separate copies and threadpoolctl cannot see PyTorch's MKL.

What it leaves out: ``torch.compile``, in-place updates and preallocated
buffers (``torch-fast`` has those), and any device other than the CPU.
"""

import contextlib

import numpy as np
import threadpoolctl
import torch
from torch import nn
from torch.nn import functional as F

from .. import costs, threads
from .base import Kernel

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


class _Mlp(nn.Module):
    """The book's sigmoid network as ``nn.Linear`` layers."""

    def __init__(self, net):
        super().__init__()
        self.layers = nn.ModuleList()
        for w, b in zip(net.weights, net.biases):
            layer = nn.Linear(w.shape[1], w.shape[0], dtype=_DTYPES[net.dtype.name])
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(w))
                layer.bias.copy_(torch.from_numpy(b))
            self.layers.append(layer)

    def forward(self, x):
        """Return the output layer's weighted inputs ``z``, ``(m, n_out)``."""
        a = x
        for layer in self.layers[:-1]:
            # (m, n_in) @ (n_in, n_out)
            a = torch.sigmoid(layer(a))
        # (m, n_in) @ (n_in, n_out)
        return self.layers[-1](a)


def _loss(cost, z, target):
    """Return the cost summed over the batch and divided by its size."""
    m = z.shape[0]
    if cost == "quadratic":
        return 0.5 * ((torch.sigmoid(z) - target) ** 2).sum() / m
    return F.binary_cross_entropy_with_logits(z, target, reduction="sum") / m


def _copy_back(model, net):
    """Write the model's parameters into ``net``'s arrays in place."""
    for layer, w, b in zip(model.layers, net.weights, net.biases):
        w[...] = layer.weight.detach().numpy()
        b[...] = layer.bias.detach().numpy()


class TorchKernel(Kernel):
    """PyTorch eager mode: autograd and ``torch.optim.SGD``."""

    name = "torch"
    pool = "torch"

    def gradients(self, net, x, y, cost):
        """Return the batch-mean gradients by autograd.

        See :meth:`Kernel.gradients`.
        """
        costs.check(cost)
        model = _Mlp(net)
        target = torch.from_numpy(costs.one_hot(y, net.sizes[-1], net.dtype))
        loss = _loss(cost, model(torch.from_numpy(np.asarray(x, net.dtype))), target)
        loss.backward()
        grad_w = [layer.weight.grad.numpy().copy() for layer in model.layers]
        grad_b = [layer.bias.grad.numpy().copy() for layer in model.layers]
        return grad_w, grad_b

    def train_epoch(self, net, x, y, order, batch_size, eta, cost):
        """Run one epoch with autograd and SGD, then copy the weights back.

        See :meth:`Kernel.train_epoch`.
        """
        costs.check(cost)
        model = _Mlp(net)
        optimizer = torch.optim.SGD(model.parameters(), lr=eta)
        inputs = torch.from_numpy(np.ascontiguousarray(x, net.dtype))
        targets = torch.from_numpy(costs.one_hot(y, net.sizes[-1], net.dtype))
        order = torch.from_numpy(np.asarray(order, np.int64))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = _loss(cost, model(inputs[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        _copy_back(model, net)

    def limit_threads(self, n):
        """Return a context manager running PyTorch on ``n`` threads.

        ``torch.set_num_threads(n)`` inside, NumPy's BLAS held at 1; both
        are restored on exit.
        """
        if n < 1:
            raise ValueError(f"torch threads must be at least 1, got {n}")
        return _torch_threads(n)

    def info(self):
        """Return PyTorch's version, threads and the loaded thread pools.

        ``threadpool_info`` is taken after PyTorch is imported, so it shows
        every BLAS and OpenMP library in the process; PyTorch's own MKL is
        linked statically and appears only through ``parallel_info``.
        """
        return {
            **super().info(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "parallel_info": parallel_info(),
            "threadpool_info": threadpoolctl.threadpool_info(),
        }


@contextlib.contextmanager
def _torch_threads(n):
    """Set PyTorch's threads to ``n`` and NumPy's BLAS to 1; restore both."""
    before = torch.get_num_threads()
    with threads.limit(blas=1):
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def parallel_info():
    """Return ``torch.__config__.parallel_info()`` as a list of short lines."""
    lines = torch.__config__.parallel_info().splitlines()
    return [line.strip() for line in lines if line.strip()]
