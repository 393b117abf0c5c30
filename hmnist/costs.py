"""The two costs of the book: quadratic (chapter 1) and cross-entropy (chapter 3).

Each cost gives its mean value over a batch and the output-layer error
``delta = dC/dz`` for one sample row, with ``a = sigmoid(z)`` the output
activations and ``y`` the one-hot target:

- quadratic:     C = 1/2 ||a - y||^2,           delta = (a - y) * a * (1 - a)
- cross-entropy: C = -sum y ln a + (1-y) ln(1-a),  delta = a - y

``a * (1 - a)`` is sigmoid'(z); every kernel computes it from ``a`` so that
all of them do the same arithmetic.
"""

import numpy as np

# Integer codes for compiled kernels, which cannot take a name.
CODES = {"quadratic": 0, "cross-entropy": 1}


def check(name):
    """Return ``name`` if it names a cost; raise ValueError otherwise."""
    if name not in CODES:
        raise ValueError(f"unknown cost {name!r}; choose from {', '.join(CODES)}")
    return name


def one_hot(y, n_classes, dtype):
    """Return ``(m, n_classes)`` one-hot rows for integer labels ``y`` ``(m,)``."""
    target = np.zeros((len(y), n_classes), dtype=dtype)
    target[np.arange(len(y)), y] = 1
    return target


def delta(name, a, target):
    """Return the output error ``dC/dz``, shape of ``a`` ``(m, n_out)``."""
    if check(name) == "quadratic":
        return (a - target) * a * (1 - a)
    return a - target


def value(name, a, y):
    """Return the mean cost over the batch for activations ``a`` and labels ``y``."""
    target = one_hot(y, a.shape[1], a.dtype)
    if check(name) == "quadratic":
        per_sample = 0.5 * np.sum((a - target) ** 2, axis=1)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = target * np.log(a) + (1 - target) * np.log(1 - a)
        per_sample = -np.sum(np.nan_to_num(terms), axis=1)
    return float(np.mean(per_sample))
