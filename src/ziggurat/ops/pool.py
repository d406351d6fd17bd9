"""Pooling: MaxPool, AveragePool, LpPool, global pools, MaxUnpool, MaxRoiPool."""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from .registry import kernel
