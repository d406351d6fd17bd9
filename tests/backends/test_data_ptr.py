"""``dnnl.data_ptr``: the address every oneDNN call re-points its memories to."""

from __future__ import annotations

import numpy as np
import pytest

from ziggurat.backends.cpu import dnnl
from ziggurat.backends.cpu.gemm import BlockedArray


def _cases():
    base = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    ro = np.ones(7, np.int8)
    ro.flags.writeable = False
    return {
        "contiguous": base,
        "offset view": base[1:, 2:, 3:],
        "transposed": base.transpose(2, 0, 1),
        "negative strides": base[::-1, :, ::-2],
        "read-only": ro,
        "empty": np.empty(0, np.float64),
        "0-d": np.array(3.5),
        "subclass": np.zeros((2, 2), np.float32).view(BlockedArray),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_data_ptr_is_the_first_elements_address(name):
    a = _cases()[name]
    assert dnnl.data_ptr(a) == a.ctypes.data


def test_the_fast_path_is_taken_on_this_build():
    """The pointer field was found where numpy keeps it (else every call pays .ctypes.data)."""
    assert dnnl._DATA_OFFSET is not None
