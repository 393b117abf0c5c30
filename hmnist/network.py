"""The sigmoid multilayer perceptron of Nielsen's book, in its notation.

``sizes = [784, 30, 10]`` gives two layers of weights. ``weights[l]`` has
shape ``(n_out, n_in)`` and ``biases[l]`` shape ``(n_out,)``, so one
sample's activations go ``a' = sigmoid(W a + b)``. Batches are rows: the
Python API takes ``x`` of shape ``(n_samples, n_in)``.

The network holds parameters and evaluates them; training lives in the
trainer and the kernels.
"""

import numpy as np

from ._io import atomic_write
from .data import to_float
from .errors import ModelError

INITS = ("standard", "scaled")
DTYPES = ("float64", "float32")
_FORMAT = 1


def sigmoid(z):
    """Return the logistic function of ``z``, elementwise."""
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-z))


class Network:
    """A fully connected sigmoid network.

    Parameters
    ----------
    sizes : sequence of int
        Neurons per layer, input first, e.g. ``[784, 30, 10]``.
    init : {"standard", "scaled"}
        ``standard``: weights and biases from N(0, 1) (book chapter 1).
        ``scaled``: weights from N(0, 1/n_in), biases from N(0, 1)
        (book chapter 3).
    seed : int
        Seed of the ``numpy.random.Generator`` that draws the parameters.
    dtype : {"float64", "float32"}
        The parameters are drawn in float64 and rounded to ``dtype``, so a
        float32 network is the float64 one rounded.
    """

    def __init__(self, sizes, init="standard", seed=0, dtype="float64"):
        self.sizes = check_sizes(sizes)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose from {', '.join(INITS)}")
        self.dtype = np.dtype(check_dtype(dtype))
        rng = np.random.default_rng(seed)
        pairs = list(zip(self.sizes[:-1], self.sizes[1:]))
        # The book draws every bias vector first, then every weight matrix.
        self.biases = [
            rng.standard_normal(n_out).astype(self.dtype) for _, n_out in pairs
        ]
        self.weights = []
        for n_in, n_out in pairs:
            scale = 1.0 if init == "standard" else 1 / np.sqrt(n_in)
            w = rng.standard_normal((n_out, n_in)) * scale
            self.weights.append(w.astype(self.dtype))

    @property
    def n_layers(self):
        """Return the number of weight layers (one less than ``len(sizes)``)."""
        return len(self.weights)

    def copy(self):
        """Return a network with copies of this one's parameters."""
        clone = object.__new__(Network)
        clone.sizes, clone.dtype = list(self.sizes), self.dtype
        clone.weights = [w.copy() for w in self.weights]
        clone.biases = [b.copy() for b in self.biases]
        return clone

    def feedforward(self, x):
        """Return the output activations, ``(n_samples, sizes[-1])``, for ``x``."""
        a = np.asarray(x, dtype=self.dtype)
        for w, b in zip(self.weights, self.biases):
            # (n, n_in) @ (n_in, n_out)
            a = sigmoid(a @ w.T + b)
        return a

    def predict(self, x):
        """Return the predicted digit for each row of ``x``, ``(n_samples,)``."""
        return np.argmax(self.feedforward(x), axis=1)

    def evaluate(self, x, y, chunk=1_000):
        """Return how many rows of ``x`` the network classifies as ``y``.

        ``x`` holds pixels in [0, 1], or uint8 pixels (0-255), which are
        scaled a chunk of rows at a time so that they are never all floats.
        """
        correct = 0
        for start in range(0, len(x), chunk):
            stop = start + chunk
            x_chunk = x[start:stop]
            if x_chunk.dtype == np.uint8:
                x_chunk = to_float(x_chunk, self.dtype)
            correct += int(np.sum(self.predict(x_chunk) == y[start:stop]))
        return correct

    def is_finite(self):
        """Return True when no weight or bias is NaN or infinite."""
        return all(np.isfinite(p).all() for p in self.weights + self.biases)

    def save(self, path):
        """Write the network to ``path`` as ``.npz``, atomically."""
        arrays = {"format": np.int64(_FORMAT), "sizes": np.asarray(self.sizes)}
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"w{l}"], arrays[f"b{l}"] = w, b
        with atomic_write(path) as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path):
        """Read a network written by :meth:`save`; check every shape."""
        try:
            npz = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ModelError(f"{path}: not a readable .npz model ({err})") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ModelError(f"{path}: a single array, not an .npz model")
        with npz:
            arrays = dict(npz)
        if "sizes" not in arrays or int(arrays.get("format", -1)) != _FORMAT:
            raise ModelError(f"{path}: not an hmnist model (no sizes or format)")
        try:
            sizes = check_sizes(np.atleast_1d(arrays["sizes"]).tolist())
        except ValueError as err:
            raise ModelError(f"{path}: {err}") from None
        net = object.__new__(cls)
        net.sizes, net.weights, net.biases = sizes, [], []
        for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            w, b = arrays.get(f"w{l}"), arrays.get(f"b{l}")
            if w is None or b is None:
                raise ModelError(f"{path}: layer {l} is missing")
            if w.shape != (n_out, n_in) or b.shape != (n_out,):
                raise ModelError(
                    f"{path}: layer {l} has shapes {w.shape} and {b.shape}, "
                    f"sizes say {(n_out, n_in)} and {(n_out,)}"
                )
            net.weights.append(w)
            net.biases.append(b)
        dtypes = {p.dtype.name for p in net.weights + net.biases}
        if len(dtypes) != 1 or dtypes.pop() not in DTYPES:
            raise ModelError(f"{path}: parameters must all be float64 or float32")
        net.dtype = net.weights[0].dtype
        return net


def check_sizes(sizes):
    """Return ``sizes`` as a list of ints; raise ValueError if it is not one."""
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes need at least two layers, got {sizes}")
    if not all(isinstance(n, (int, np.integer)) and n >= 1 for n in sizes):
        raise ValueError(f"sizes must be positive integers, got {sizes}")
    return [int(n) for n in sizes]


def check_dtype(dtype):
    """Return ``dtype``'s name if it is float64 or float32; raise ValueError."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    return name
