"""hmnist: how fast a CPU trains Nielsen's MNIST network, and what threads buy.

One network, one trainer, one data loader, and interchangeable backprop
kernels (``loop``, ``matmul``, ``numba``) that compute the same weights.
"""

__version__ = "0.1.0"
