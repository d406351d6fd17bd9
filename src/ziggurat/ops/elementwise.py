"""Elementwise math, comparison, logical and bitwise ops, Cast/CastLike, Where, Clip."""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from .registry import kernel
