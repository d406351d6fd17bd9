"""Which array module computes on a given array.

Kernels call ``xp = xp_of(x)`` and compute with ``xp.*`` so the same code runs on numpy and CuPy
arrays. The check looks at the array's type module and so never imports CuPy on a CPU-only machine.
"""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np


def xp_of(*arrays: object) -> ModuleType:
    """numpy, unless one of ``arrays`` is a CuPy array (then the already-imported cupy module)."""
    for a in arrays:
        t = type(a)
        if t is np.ndarray:  # the hot case, checked first: this runs once per kernel call
            continue
        if t.__module__.startswith("cupy"):
            return sys.modules["cupy"]
    return np
