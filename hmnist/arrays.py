"""NumPy arrays whose data start on a cache line.

NumPy aligns an array's data to 16 bytes. A 64-byte vector load from an
address that is not a multiple of 64 touches two cache lines, and the
``numba`` kernel's loads then run at about half speed; rows of 784
float64s or float32s are whole cache lines, so an array that starts on
one keeps every row on one.
"""

import numpy as np

CACHE_LINE = 64


def aligned_empty(shape, dtype):
    """Return an uninitialised array whose data start on a cache line."""
    dtype = np.dtype(dtype)
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(n_bytes + CACHE_LINE, np.uint8)
    offset = -buffer.ctypes.data % CACHE_LINE
    return buffer[offset : offset + n_bytes].view(dtype).reshape(shape)


def aligned_zeros(shape, dtype):
    """Return an array of zeros whose data start on a cache line."""
    a = aligned_empty(shape, dtype)
    a[...] = 0
    return a
