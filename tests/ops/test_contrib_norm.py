"""com.microsoft normalizations against onnxruntime, over shapes, optional inputs and outputs."""

from __future__ import annotations

import numpy as np
import pytest

from ziggurat.errors import ExecutionError

from ._contrib import assert_close, check, run_both, zg_run

H = 16


def _r(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("skip_shape", ["full", "1SH", "SH"])
@pytest.mark.parametrize("optional", [(), ("beta",), ("beta", "bias"), ("bias",)])
@pytest.mark.parametrize("n_out", [1, 4])
def test_skip_layer_norm(skip_shape, optional, n_out):
    rng = np.random.default_rng(1)
    x = _r(rng, 2, 5, H)
    skip = {"full": _r(rng, 2, 5, H), "1SH": _r(rng, 1, 5, H), "SH": _r(rng, 5, H)}[skip_shape]
    ins = [("x", x), ("skip", skip), ("gamma", _r(rng, H))]
    ins += [("beta", _r(rng, H) if "beta" in optional else None)]
    ins += [("bias", _r(rng, H) if "bias" in optional else None)]
    check("SkipLayerNormalization", ins, n_out, {"epsilon": 1e-6}, n_terms=H,
          out_types=[np.float32] * n_out)  # fmt: skip


def test_skip_layer_norm_sum_only_output():
    """The optimizer's form: output and input_skip_bias_sum declared, the statistics left out."""
    rng = np.random.default_rng(2)
    ins = [
        ("x", _r(rng, 3, 4, H)),
        ("skip", _r(rng, 3, 4, H)),
        ("g", _r(rng, H)),
        ("b", _r(rng, H)),
    ]
    check("SkipLayerNormalization", ins, 4, outputs=["y", "", "", "sum"], n_terms=H)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("n_out", [1, 4])
def test_skip_simplified_layer_norm(with_bias, n_out):
    rng = np.random.default_rng(3)
    ins = [("x", _r(rng, 2, 3, H)), ("skip", _r(rng, 2, 3, H)), ("gamma", _r(rng, H))]
    ins += [("bias", _r(rng, H) if with_bias else None)]
    check("SkipSimplifiedLayerNormalization", ins, n_out, n_terms=H)


@pytest.mark.parametrize("axis", [-1, 1])
def test_simplified_layer_norm(axis):
    rng = np.random.default_rng(4)
    x = _r(rng, 2, 3, 8)
    scale = _r(rng, *x.shape[axis % 3 :])
    check("SimplifiedLayerNormalization", [("x", x), ("s", scale)], 2, {"axis": axis},
          domain="", n_terms=24)  # fmt: skip


def test_layer_norm_contrib_form_before_opset_17():
    rng = np.random.default_rng(5)
    ins = [("x", _r(rng, 2, 3, H)), ("s", _r(rng, H)), ("b", _r(rng, H))]
    check("LayerNormalization", ins, 3, {"epsilon": 1e-5}, domain="", opset=13, n_terms=H)


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("segments", [False, True])
@pytest.mark.parametrize("position_ids", [None, "1S", "BS"])
def test_embed_layer_norm(mask, segments, position_ids):
    rng = np.random.default_rng(6)
    B, S, V, P = 2, 5, 11, 9
    ids = rng.integers(0, V, (B, S)).astype(np.int32)
    seg = rng.integers(0, 2, (B, S)).astype(np.int32) if segments else None
    m = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32) if mask else None
    pos = None
    if position_ids:
        pos = rng.integers(0, P, (1 if position_ids == "1S" else B, S)).astype(np.int32)
    ins = [("ids", ids), ("seg", seg), ("we", _r(rng, V, H)), ("pe", _r(rng, P, H)),
           ("se", _r(rng, 2, H) if segments else None), ("g", _r(rng, H)), ("b", _r(rng, H)),
           ("mask", m), ("pos", pos)]  # fmt: skip
    ref, got = check("EmbedLayerNormalization", ins, 3, n_terms=H,
                     out_types=[np.float32, np.int32, np.float32])  # fmt: skip
    assert list(got[1]) == ([3, 5] if mask else [0, 0])


def test_skip_layer_norm_rejects_wrong_gamma():
    rng = np.random.default_rng(7)
    ins = [("x", _r(rng, 2, 3, H)), ("skip", _r(rng, 2, 3, H)), ("gamma", _r(rng, H - 1))]
    with pytest.raises(ExecutionError, match="gamma has shape"):
        zg_run("SkipLayerNormalization", ins)


@pytest.mark.parametrize("op", ["SkipLayerNormalization", "SkipSimplifiedLayerNormalization"])
def test_skip_norms_float16(op):
    """float16 in and out: a few float16 ulps (eps 2^-10) of the output's scale."""
    rng = np.random.default_rng(8)
    f16 = np.float16
    ins = [("x", _r(rng, 2, 3, H).astype(f16)), ("skip", _r(rng, 2, 3, H).astype(f16)),
           ("gamma", _r(rng, H).astype(f16))]  # fmt: skip
    if op == "SkipLayerNormalization":
        ins.append(("beta", _r(rng, H).astype(f16)))
    ref, got = run_both(op, ins, 1)
    assert_close(got[0], ref[0], 8 * 2.0**-10 * float(np.abs(ref[0]).max()), op)
