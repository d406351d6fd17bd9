"""ai.onnx.preview.training optimizers: Adagrad, Adam, Momentum."""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from .registry import kernel
