"""Tensor construction and indexing: Constant, ConstantOfShape, Range, Gather*, Scatter*, TopK, Unique, NonZero, CumSum, ..."""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from .registry import kernel
