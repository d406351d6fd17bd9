"""Recurrent ops: RNN, GRU, LSTM.

All three share one driver: the input projection ``X @ W^T + Wb`` is one matmul over every time step,
then a short Python loop over time applies the cell. ``sequence_lens`` is handled by masking (a
finished batch item keeps its state and emits zeros); the reverse direction gathers each item's first
``len`` steps in reverse order, runs forward, and scatters back with the same (self-inverse) index.
Half-precision inputs are computed in float32 and cast back, so the outputs keep the input dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel

# name -> (function(xp, x, alpha, beta), default alpha, default beta); alpha/beta None = not used.
_ACTIVATIONS: dict[str, tuple[Callable, float | None, float | None]] = {
    "relu": (lambda xp, x, a, b: xp.maximum(x, 0), None, None),
    "tanh": (lambda xp, x, a, b: xp.tanh(x), None, None),
    # 0.5 * (1 + tanh(x / 2)) is sigmoid without exp overflow for large |x|.
    "sigmoid": (lambda xp, x, a, b: 0.5 * (1 + xp.tanh(0.5 * x)), None, None),
    "affine": (lambda xp, x, a, b: a * x + b, 1.0, 0.0),
    "leakyrelu": (lambda xp, x, a, b: xp.where(x >= 0, x, a * x), 0.01, None),
    "thresholdedrelu": (lambda xp, x, a, b: xp.where(x > a, x, 0), 1.0, None),
    "scaledtanh": (lambda xp, x, a, b: a * xp.tanh(b * x), 1.0, 1.0),
    "hardsigmoid": (lambda xp, x, a, b: xp.clip(a * x + b, 0, 1), 0.2, 0.5),
    "elu": (lambda xp, x, a, b: xp.where(x >= 0, x, a * (xp.exp(xp.minimum(x, 0)) - 1)), 1.0, None),
    "softsign": (lambda xp, x, a, b: x / (1 + xp.abs(x)), None, None),
    "softplus": (lambda xp, x, a, b: xp.logaddexp(0, x), None, None),
}


def _activations(
    names: list[str] | None,
    defaults: list[str],
    n_dirs: int,
    alphas: list[float] | None,
    betas: list[float] | None,
) -> list[list[Callable]]:
    """Per direction, the cell's activation functions with their alpha/beta bound.

    alpha and beta lists are consumed in activation order, one entry per function that uses it
    (the onnxruntime convention); missing entries take the matching ONNX op's default.
    """
    per_dir = len(defaults)
    names = list(names) if names else defaults * n_dirs
    if len(names) == per_dir and n_dirs == 2:
        names = names * 2
    if len(names) != per_dir * n_dirs:
        raise ExecutionError(
            f"activations has {len(names)} entries, expected {per_dir * n_dirs} "
            f"({per_dir} per direction x {n_dirs} directions); list one function per gate and direction"
        )
    alphas, betas = list(alphas or []), list(betas or [])
    funcs: list[Callable] = []
    for name in names:
        try:
            fn, da, db = _ACTIVATIONS[name.lower()]
        except KeyError:
            raise ExecutionError(
                f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)} (case-insensitive)"
            ) from None
        a = (alphas.pop(0) if alphas else da) if da is not None else None
        b = (betas.pop(0) if betas else db) if db is not None else None
        funcs.append(lambda xp, x, fn=fn, a=a, b=b: fn(xp, x, a, b))
    return [funcs[d * per_dir : (d + 1) * per_dir] for d in range(n_dirs)]


def _n_dirs(direction: str) -> int:
    if direction in ("forward", "reverse"):
        return 1
    if direction == "bidirectional":
        return 2
    raise ExecutionError(
        f"direction is {direction!r}; expected 'forward', 'reverse' or 'bidirectional'"
    )


def _compute_dtype(dt: np.dtype) -> np.dtype:
    # float16/bfloat16 accumulate badly over time steps; run them in float32.
    return np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)


def _run(cells, X, W, R, B, sequence_lens, states, *, n_gates, direction, layout, fold_rb):
    """Shared driver. ``cells[d]`` is direction d's step; ``states`` lists the initial state tensors
    (h, or h and c), each possibly None.

    ``cells[d](xw_t, states, R_T, rb, xp)`` returns the new states; states[0] is h. ``fold_rb``
    folds the R bias into the input projection (GRU's linear_before_reset needs Rb_h kept apart,
    so GRU takes it in the cell). Returns (Y, *final_states) in the ONNX layout.
    """
    xp = xp_of(X)
    out_dtype = X.dtype
    cdt = _compute_dtype(out_dtype)
    n_dirs = _n_dirs(direction)
    if W.shape[0] != n_dirs:
        raise ExecutionError(
            f"W has {W.shape[0]} directions, expected {n_dirs} for direction={direction!r}"
        )
    if layout == 1:  # [batch, seq, ...] -> time-major
        X = xp.swapaxes(X, 0, 1)
        states = [None if s is None else xp.swapaxes(s, 0, 1) for s in states]
    T, N, _ = X.shape
    H = R.shape[-1]
    X = X.astype(cdt, copy=False)
    if sequence_lens is None:
        lens = np.full(N, T, dtype=np.int64)
    else:  # host copy: lengths drive the Python-level masking decisions
        lens = np.asarray(sequence_lens.get() if hasattr(sequence_lens, "get") else sequence_lens)
        lens = lens.astype(np.int64)
    full = bool((lens == T).all())
    steps = np.arange(T)[:, None]
    valid = xp.asarray(steps < lens[None, :])[:, :, None]  # [T, N, 1]
    # Reverse order per batch item: step t reads time len-1-t while t < len (self-inverse).
    rev_idx = xp.asarray(np.where(steps < lens[None, :], lens[None, :] - 1 - steps, steps))
    batch_idx = xp.arange(N)[None, :]

    ys, finals = [], [[] for _ in states]
    for d in range(n_dirs):
        reverse = direction == "reverse" or d == 1
        if B is None:
            wb = rb = xp.zeros(n_gates * H, dtype=cdt)
        else:
            wb = B[d, : n_gates * H].astype(cdt)
            rb = B[d, n_gates * H :].astype(cdt)
        proj = X @ W[d].astype(cdt, copy=False).T + (wb + rb if fold_rb else wb)  # [T, N, G*H]
        if reverse:
            proj = proj[::-1] if full else proj[rev_idx, batch_idx]
        st = [xp.zeros((N, H), dtype=cdt) if s is None else s[d].astype(cdt) for s in states]
        R_T = xp.ascontiguousarray(R[d].astype(cdt, copy=False).T)
        y = xp.empty((T, N, H), dtype=cdt)
        for t in range(T):
            new = cells[d](proj[t], st, R_T, rb, xp)
            if full:
                st = new
                y[t] = new[0]
            else:  # finished items keep their state and emit zeros
                m = valid[t]
                st = [xp.where(m, n_, o_) for n_, o_ in zip(new, st)]
                y[t] = xp.where(m, new[0], 0)
        if reverse:
            y = y[::-1] if full else y[rev_idx, batch_idx]
        ys.append(y)
        for i, s in enumerate(st):
            finals[i].append(s)
    Y = xp.stack(ys, axis=1).astype(out_dtype)  # [T, D, N, H]
    finals = [xp.stack(f, axis=0).astype(out_dtype) for f in finals]  # [D, N, H]
    if layout == 1:
        Y = xp.transpose(Y, (2, 0, 1, 3))
        finals = [xp.swapaxes(f, 0, 1) for f in finals]
    return (Y, *finals)


def _clip(x, clip, xp):
    return x if clip is None else xp.clip(x, -clip, clip)


def _rnn_cell(funcs, clip):
    (f,) = funcs

    def cell(xw, st, R_T, rb, xp):
        return [f(xp, _clip(xw + st[0] @ R_T, clip, xp))]

    return cell


@kernel("RNN", since=1)
def RNN(
    X, W, R, B=None, sequence_lens=None, initial_h=None, /, *,
    activation_alpha=None, activation_beta=None, activations=None, clip=None,
    direction="forward", hidden_size=None, layout=0, output_sequence=0,
):  # fmt: skip
    """Elman RNN: Ht = f(Xt W^T + Ht-1 R^T + Wb + Rb). Returns (Y, Y_h)."""
    funcs = _activations(
        activations, ["Tanh"], _n_dirs(direction), activation_alpha, activation_beta
    )
    cells = [_rnn_cell(f, clip) for f in funcs]
    return _run(
        cells, X, W, R, B, sequence_lens, [initial_h], n_gates=1, direction=direction, layout=layout,
        fold_rb=True,
    )  # fmt: skip


def _gru_cell(funcs, clip, linear_before_reset):
    f, g = funcs

    def cell(xw, st, R_T, rb, xp):
        (h,) = st
        H = h.shape[-1]
        hr = h @ R_T[:, : 2 * H]  # recurrent part of z and r
        z = f(xp, _clip(xw[:, :H] + hr[:, :H] + rb[:H], clip, xp))
        r = f(xp, _clip(xw[:, H : 2 * H] + hr[:, H:] + rb[H : 2 * H], clip, xp))
        if linear_before_reset:
            hh = r * (h @ R_T[:, 2 * H :] + rb[2 * H :])
        else:
            hh = (r * h) @ R_T[:, 2 * H :] + rb[2 * H :]
        n = g(xp, _clip(xw[:, 2 * H :] + hh, clip, xp))
        return [(1 - z) * n + z * h]

    return cell


@kernel("GRU", since=1)
def GRU(
    X, W, R, B=None, sequence_lens=None, initial_h=None, /, *,
    activation_alpha=None, activation_beta=None, activations=None, clip=None,
    direction="forward", hidden_size=None, layout=0, linear_before_reset=0, output_sequence=0,
):  # fmt: skip
    """GRU with gates (z, r, h); ``linear_before_reset`` applies R_h before the reset gate. Returns (Y, Y_h)."""
    funcs = _activations(
        activations, ["Sigmoid", "Tanh"], _n_dirs(direction), activation_alpha, activation_beta
    )
    cells = [_gru_cell(f, clip, linear_before_reset) for f in funcs]
    return _run(
        cells, X, W, R, B, sequence_lens, [initial_h], n_gates=3, direction=direction, layout=layout,
        fold_rb=False,
    )  # fmt: skip


def _lstm_cell(funcs, clip, peephole, input_forget):
    f, g, hf = funcs

    def cell(xw, st, R_T, rb, xp):
        h, c = st
        H = h.shape[-1]
        gates = xw + h @ R_T  # [N, 4H] in order i, o, f, c
        gi, go, gf, gc = (gates[:, k * H : (k + 1) * H] for k in range(4))
        if peephole is not None:
            gi = gi + peephole[0] * c
            gf = gf + peephole[2] * c
        i = f(xp, _clip(gi, clip, xp))
        forget = 1 - i if input_forget else f(xp, _clip(gf, clip, xp))
        c_new = forget * c + i * g(xp, _clip(gc, clip, xp))
        if peephole is not None:
            go = go + peephole[1] * c_new
        o = f(xp, _clip(go, clip, xp))
        return [o * hf(xp, c_new), c_new]

    return cell


@kernel("LSTM", since=1)
def LSTM(
    X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, /, *,
    activation_alpha=None, activation_beta=None, activations=None, clip=None,
    direction="forward", hidden_size=None, input_forget=0, layout=0, output_sequence=0,
):  # fmt: skip
    """LSTM with gates (i, o, f, c) and optional peepholes P (i, o, f). Returns (Y, Y_h, Y_c)."""
    n_dirs = _n_dirs(direction)
    funcs = _activations(
        activations, ["Sigmoid", "Tanh", "Tanh"], n_dirs, activation_alpha, activation_beta
    )
    H = R.shape[-1]
    cdt = _compute_dtype(X.dtype)
    cells = [
        _lstm_cell(
            funcs[d], clip, None if P is None else P[d].astype(cdt).reshape(3, H), input_forget
        )
        for d in range(n_dirs)
    ]
    return _run(
        cells, X, W, R, B, sequence_lens, [initial_h, initial_c], n_gates=4, direction=direction,
        layout=layout, fold_rb=True,
    )  # fmt: skip
