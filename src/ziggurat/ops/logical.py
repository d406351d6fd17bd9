"""Comparison, logical and bitwise ops: Equal/Greater/Less(OrEqual), And/Or/Xor/Not, Bitwise*, BitShift.

Comparisons return bool tensors; numpy's comparison ufuncs do that for every dtype including strings
held in object arrays. Bitwise ops keep the input dtype.
"""

from __future__ import annotations

import numpy as np

from ..errors import ExecutionError
from ._ewmath import as_array, is_exotic_float, xp_fast
from .elementwise import register_legacy_binary
from .registry import kernel


def _compare(ufunc_name: str, a, b):
    xp = xp_fast(a)
    if is_exotic_float(a.dtype):  # ml_dtypes floats compare exactly once widened to float32
        a, b = a.astype(np.float32), b.astype(np.float32)
    return (as_array(getattr(xp, ufunc_name)(a, b)),)


@kernel("Equal", since=7)
def Equal(a, b, /):
    """A == B (bool); works for strings too."""
    return _compare("equal", a, b)


@kernel("Greater", since=7)
def Greater(a, b, /):
    """A > B (bool)."""
    return _compare("greater", a, b)


@kernel("Less", since=7)
def Less(a, b, /):
    """A < B (bool)."""
    return _compare("less", a, b)


@kernel("GreaterOrEqual", since=12)
def GreaterOrEqual(a, b, /):
    """A >= B (bool)."""
    return _compare("greater_equal", a, b)


@kernel("LessOrEqual", since=12)
def LessOrEqual(a, b, /):
    """A <= B (bool)."""
    return _compare("less_equal", a, b)


@kernel("And", since=7)
def And(a, b, /):
    """Logical A and B on bool tensors."""
    return (as_array(xp_fast(a).logical_and(a, b)),)


@kernel("Or", since=7)
def Or(a, b, /):
    """Logical A or B on bool tensors."""
    return (as_array(xp_fast(a).logical_or(a, b)),)


@kernel("Xor", since=7)
def Xor(a, b, /):
    """Logical A xor B on bool tensors."""
    return (as_array(xp_fast(a).logical_xor(a, b)),)


@kernel("Not", since=1)
def Not(x, /):
    """Logical not of a bool tensor."""
    return (as_array(xp_fast(x).logical_not(x)),)


for _op, _fn in (
    ("Equal", Equal), ("Greater", Greater), ("Less", Less), ("And", And), ("Or", Or), ("Xor", Xor),
):  # fmt: skip
    register_legacy_binary(_op, _fn)


@kernel("BitwiseAnd", since=18)
def BitwiseAnd(a, b, /):
    """Bitwise A & B on integer tensors."""
    return (as_array(xp_fast(a).bitwise_and(a, b)),)


@kernel("BitwiseOr", since=18)
def BitwiseOr(a, b, /):
    """Bitwise A | B on integer tensors."""
    return (as_array(xp_fast(a).bitwise_or(a, b)),)


@kernel("BitwiseXor", since=18)
def BitwiseXor(a, b, /):
    """Bitwise A ^ B on integer tensors."""
    return (as_array(xp_fast(a).bitwise_xor(a, b)),)


@kernel("BitwiseNot", since=18)
def BitwiseNot(x, /):
    """Bitwise ~X on integer tensors."""
    return (as_array(xp_fast(x).invert(x)),)


@kernel("BitShift", since=11)
def BitShift(x, y, /, *, direction):
    """X shifted LEFT or RIGHT by Y bits (broadcast).

    Right shifts of signed types are arithmetic. A shift amount that is negative or >= the bit width
    gives what the sign extension alone produces: -1 for a right shift of a negative X, else 0 (numpy
    leaves such shifts to the C compiler, so they are masked here).
    """
    xp = xp_fast(x)
    if direction not in ("LEFT", "RIGHT"):
        raise ExecutionError(f"BitShift direction must be 'LEFT' or 'RIGHT', got {direction!r}")
    bits = x.dtype.itemsize * 8
    y = y.astype(x.dtype, copy=False)
    valid = (y >= 0) & (y < bits)
    all_valid = bool(valid.all())
    amount = y if all_valid else xp.where(valid, y, 0).astype(x.dtype)
    if direction == "LEFT":
        z = xp.left_shift(x, amount)
        fill = 0
    else:
        z = xp.right_shift(x, amount)
        fill = xp.where(x < 0, -1, 0).astype(x.dtype) if x.dtype.kind == "i" else 0
    if not all_valid:
        z = xp.where(valid, z, fill).astype(x.dtype, copy=False)
    return (as_array(z),)
