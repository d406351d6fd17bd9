"""ai.onnx.preview.training optimizers: Adagrad, Adam, Momentum.

Each takes ``R`` (learning rate, scalar), ``T`` (update count, int64 scalar) and then the optimized
tensors' groups concatenated: Adagrad ``X..., G..., H...``; Adam ``X..., G..., V..., H...``;
Momentum ``X..., G..., V...``. The outputs are the new values of every group but ``G``, in order.
The scalar coefficients are folded into Python floats so the tensors' dtype (float32 or float64)
is kept rather than promoted by the int64 ``T``.
"""

from __future__ import annotations

import math

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel

_DOMAIN = "ai.onnx.preview.training"


def _groups(op: str, inputs: tuple, n_groups: int) -> list[tuple]:
    """Split the variadic tensors after R and T into ``n_groups`` equal groups."""
    if len(inputs) % n_groups or not inputs:
        raise ExecutionError(
            f"{op}: expected R, T and then {n_groups} equal groups of tensors, got {len(inputs) + 2} inputs"
        )
    k = len(inputs) // n_groups
    return [inputs[i * k : (i + 1) * k] for i in range(n_groups)]


def _scalar(v) -> float:
    return float(v.reshape(-1)[0]) if hasattr(v, "reshape") else float(v)


@kernel("Adagrad", since=1, domain=_DOMAIN)
def Adagrad(R, T, /, *inputs, decay_factor=0.0, epsilon=1e-6, norm_coefficient=0.0):
    """One ADAGRAD step for each (X, G, H): returns X_new..., H_new..."""
    xs, gs, hs = _groups("Adagrad", inputs, 3)
    r = _scalar(R) / (1.0 + _scalar(T) * decay_factor)
    new_x, new_h = [], []
    for x, g, h in zip(xs, gs, hs):
        xp = xp_of(x)
        t = x.dtype.type
        g_reg = t(norm_coefficient) * x + g
        h_new = h + g_reg * g_reg
        x_new = x - t(r) * g_reg / (xp.sqrt(h_new) + t(epsilon))
        new_x.append(x_new.astype(x.dtype, copy=False))
        new_h.append(h_new.astype(h.dtype, copy=False))
    return (*new_x, *new_h)


@kernel("Adam", since=1, domain=_DOMAIN)
def Adam(
    R,
    T,
    /,
    *inputs,
    alpha=0.9,
    beta=0.999,
    epsilon=1e-6,
    norm_coefficient=0.0,
    norm_coefficient_post=0.0,
):
    """One Adam step for each (X, G, V, H): returns X_new..., V_new..., H_new..."""
    xs, gs, vs, hs = _groups("Adam", inputs, 4)
    r, step = _scalar(R), _scalar(T)
    if step > 0:
        r = r * math.sqrt(1.0 - beta**step) / (1.0 - alpha**step)
    new_x, new_v, new_h = [], [], []
    for x, g, v, h in zip(xs, gs, vs, hs):
        xp = xp_of(x)
        t = x.dtype.type
        g_reg = t(norm_coefficient) * x + g
        v_new = t(alpha) * v + t(1.0 - alpha) * g_reg
        h_new = t(beta) * h + t(1.0 - beta) * g_reg * g_reg
        x_new = x - t(r) * v_new / (xp.sqrt(h_new) + t(epsilon))
        x_new = t(1.0 - norm_coefficient_post) * x_new
        new_x.append(x_new.astype(x.dtype, copy=False))
        new_v.append(v_new.astype(v.dtype, copy=False))
        new_h.append(h_new.astype(h.dtype, copy=False))
    return (*new_x, *new_v, *new_h)


@kernel("Momentum", since=1, domain=_DOMAIN)
def Momentum(R, T, /, *inputs, alpha, beta, mode, norm_coefficient):
    """One SGD-with-momentum step (mode "standard" or "nesterov") for each (X, G, V): X_new..., V_new..."""
    if mode not in ("standard", "nesterov"):
        raise ExecutionError(f"Momentum: mode must be 'standard' or 'nesterov', got {mode!r}")
    xs, gs, vs = _groups("Momentum", inputs, 3)
    r = _scalar(R)
    beta_adj = beta if _scalar(T) > 0 else 1.0
    new_x, new_v = [], []
    for x, g, v in zip(xs, gs, vs):
        t = x.dtype.type
        g_reg = t(norm_coefficient) * x + g
        v_new = t(alpha) * v + t(beta_adj) * g_reg
        if mode == "nesterov":
            x_new = x - t(r) * (g_reg + t(alpha) * v_new)
        else:
            x_new = x - t(r) * v_new
        new_x.append(x_new.astype(x.dtype, copy=False))
        new_v.append(v_new.astype(v.dtype, copy=False))
    return (*new_x, *new_v)
