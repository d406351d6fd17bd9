"""Shape manipulation: Reshape, Transpose, Squeeze, Unsqueeze, Flatten, Concat, Split, Slice, Pad, Tile, Expand, Shape, Size, ..."""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from .registry import kernel
