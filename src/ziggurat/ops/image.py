"""Image and geometry: Resize, GridSample, RoiAlign, NonMaxSuppression, Col2Im, AffineGrid, ..."""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from .registry import kernel
