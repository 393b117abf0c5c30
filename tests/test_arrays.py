"""Arrays that start on a cache line."""

import pytest

from hmnist.arrays import CACHE_LINE, aligned_empty, aligned_zeros


@pytest.mark.parametrize("shape", [(0,), (7,), (3, 5), (50, 784), (2, 3, 4, 5)])
@pytest.mark.parametrize("dtype", ["float64", "float32", "uint8"])
def test_aligned_arrays_start_on_a_cache_line(shape, dtype):
    for a in (aligned_empty(shape, dtype), aligned_zeros(shape, dtype)):
        assert a.shape == shape
        assert a.dtype == dtype
        assert a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % CACHE_LINE == 0 or a.size == 0
    assert not aligned_zeros(shape, dtype).any()
