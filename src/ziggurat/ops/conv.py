"""Convolutions (GEMM-class, im2col): Conv, ConvTranspose, ConvInteger, DeformConv."""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from .registry import kernel
