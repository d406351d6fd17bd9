"""Scaled dot-product attention, as the BERT, GPT-2 and ViT exports write it, fuses into
ziggurat::FusedAttention; near misses stay unfused; results match the unfused graph and
onnxruntime."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from tests.models import builders
from tests.passes._fusion_check import assert_close_everywhere, fused_ops, make_model

EPS32 = float(np.finfo(np.float32).eps)
B, S, NH, D = 2, 7, 3, 8
n = helper.make_node


def _attention_model(
    scale_on="qk", mask="where", nan_fix=True, softmax_axis=-1, zero=0.0, extra=""
) -> object:
    """Heads split by Reshape/Transpose from [B, S, NH*D] inputs q, k, v, then the core.

    scale_on: 'qk' (GPT-2/BERT SDPA export: Mul on q and on kT), 'div' (older BERT: scores / sqrt
    D), 'none'. mask: 'where' (bool mask -> Where(m, 0, -inf) -> Add), 'add' (float mask input),
    'none' (ViT). nan_fix: Where(IsNaN(p), zero, p) after Softmax. ``extra``: an intermediate
    also exported as an output.
    """
    s = 1 / math.sqrt(math.sqrt(D))
    nodes = [
        n("Reshape", ["q", "heads"], ["qr"]), n("Transpose", ["qr"], ["qt"], perm=[0, 2, 1, 3]),
        n("Reshape", ["k", "heads"], ["kr"]), n("Transpose", ["kr"], ["kt"], perm=[0, 2, 3, 1]),
        n("Reshape", ["v", "heads"], ["vr"]), n("Transpose", ["vr"], ["vt"], perm=[0, 2, 1, 3]),
    ]  # fmt: skip
    q, k = "qt", "kt"
    if scale_on == "qk":
        nodes += [n("Mul", ["qt", "s"], ["qs"]), n("Mul", ["kt", "s"], ["ks"])]
        q, k = "qs", "ks"
    nodes.append(n("MatMul", [q, k], ["scores"]))
    scores = "scores"
    if scale_on == "div":
        nodes.append(n("Div", ["scores", "sqrt_d"], ["scaled"]))
        scores = "scaled"
    if mask != "none":
        if mask == "where":
            nodes.append(n("Where", ["m", "zero_f", "ninf"], ["bias"]))
        nodes.append(n("Add", [scores, "bias" if mask == "where" else "mf"], ["masked"]))
        scores = "masked"
    nodes.append(n("Softmax", [scores], ["p"], axis=softmax_axis))
    p = "p"
    if nan_fix:
        nodes += [n("IsNaN", ["p"], ["isnan"]), n("Where", ["isnan", "fix", "p"], ["pf"])]
        p = "pf"
    nodes += [
        n("MatMul", [p, "vt"], ["ctx"]),
        n("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        n("Reshape", ["ctx_t", "merge"], ["y"]),
    ]
    inits = {
        "heads": np.array([B, S, NH, D], np.int64), "merge": np.array([B, S, NH * D], np.int64),
        "s": np.array(s, np.float32), "sqrt_d": np.array(math.sqrt(D), np.float32),
        "zero_f": np.array(0.0, np.float32), "ninf": np.array(-np.inf, np.float32),
        "fix": np.array(zero, np.float32),
    }  # fmt: skip
    f32 = np.float32
    inputs = [(name, f32, [B, S, NH * D]) for name in "qkv"]
    if mask == "where":
        inputs.append(("m", np.bool_, [B, 1, S, S]))
    elif mask == "add":
        inputs.append(("mf", f32, [B, 1, 1, S]))
    outputs = [("y", f32, [B, S, NH * D])] + ([(extra, f32, None)] if extra else [])
    return make_model(nodes, inputs, outputs, inits)


def _feeds(mask="where", seed=0):
    rng = np.random.default_rng(seed)
    feeds = {c: rng.standard_normal((B, S, NH * D)).astype(np.float32) for c in "qkv"}
    if mask == "where":
        causal = np.tril(np.ones((S, S), bool))
        m = np.broadcast_to(causal, (B, 1, S, S)).copy()
        m[1, 0, 2] = False  # batch 1, query 2: every key masked -> NaN, fixed to 0 by the graph
        feeds["m"] = m
    elif mask == "add":
        feeds["mf"] = np.where(rng.random((B, 1, 1, S)) < 0.3, -1e4, 0).astype(np.float32)
    return feeds


def _atol(feeds):
    """Scores are length-D dot products: error <= D^2 eps max|q| max|k| / sqrt(D) (delta);
    softmax turns it into <= 2 delta relative error of each probability, and the output sums S
    terms p v (S eps relative): (2 delta + (S + 4) eps) max|v|, doubled for two implementations."""
    q, k, v = (float(np.abs(feeds[c]).max()) for c in "qkv")
    delta = D * D * EPS32 * q * k / math.sqrt(D)
    return 2 * (2 * delta + (S + 4) * EPS32) * v


@pytest.mark.parametrize(
    "scale_on,mask,nan_fix",
    [
        ("qk", "where", True),  # GPT-2 / BERT SDPA export
        ("qk", "none", False),  # ViT
        ("div", "add", False),  # older BERT export: scores / sqrt(d) + (1 - mask) * -10000
        ("none", "add", False),
    ],
)
def test_attention_fuses_and_matches(scale_on, mask, nan_fix):
    model = _attention_model(scale_on, mask, nan_fix)
    ops = fused_ops(model)
    assert "FusedAttention" in ops and "Softmax" not in ops and "MatMul" not in ops, ops
    feeds = _feeds(mask)
    assert_close_everywhere(model, feeds, _atol(feeds))


def test_attention_fully_masked_row_without_nan_fix_stays_nan():
    model = _attention_model("qk", "where", nan_fix=False)
    assert "FusedAttention" in fused_ops(model)
    feeds = _feeds("where")
    assert_close_everywhere(model, feeds, _atol(feeds))  # NaNs must sit in the same places


@pytest.mark.parametrize(
    "kwargs",
    [
        {"softmax_axis": 2},  # softmax over queries, not keys
        {"zero": 1.0},  # Where(IsNaN(p), 1, p) is not the zero fix
        {"extra": "scores"},  # the raw scores are read elsewhere
        {"extra": "p"},  # the probabilities are an output too
    ],
)
def test_attention_near_misses_do_not_fuse(kwargs):
    model = _attention_model(**kwargs)
    ops = fused_ops(model)
    assert "FusedAttention" not in ops and "Softmax" in ops
    feeds = _feeds("where")
    assert_close_everywhere(model, feeds, _atol(feeds))


def test_scaled_query_read_elsewhere_is_kept_as_the_kernel_input():
    """A Mul on q with a second reader stays (computed once) and feeds the fused kernel, which
    then applies only the key's scale: no work is duplicated, so this fusion is allowed."""
    model = _attention_model(extra="qs")
    ops = fused_ops(model)
    assert "FusedAttention" in ops and ops.count("Mul") == 1
    feeds = _feeds("where")
    assert_close_everywhere(model, feeds, _atol(feeds))


def test_transformer_block_fuses_attention_and_layernorms():
    model = builders.transformer_block()
    ops = fused_ops(model)
    assert ops.count("FusedAttention") == 1 and ops.count("SkipLayerNorm") == 2
    assert "Softmax" not in ops and "LayerNormalization" not in ops
    rng = np.random.default_rng(3)
    feeds = {
        "x": rng.standard_normal((2, 9, 64)).astype(np.float32),
        "mask": (rng.random((2, 9)) < 0.8).astype(np.int64),
    }
    # Dense GEMMs of length 64 and 256 before and after; the output is LayerNorm-ed (|y| ~ 4):
    # the fused/unfused difference is bounded by the longest reduction's rounding, 256 eps, times
    # the LayerNorm's gain sqrt(64) on a normalized output.
    assert_close_everywhere(model, feeds, 2 * 256 * EPS32 * math.sqrt(64) * 4)


def test_softmax_with_default_axis_before_opset_13_does_not_fuse():
    model = _attention_model("qk", "none", False)
    for node in model.graph.node:
        if node.op_type == "Softmax":
            del node.attribute[:]
    model.opset_import[0].version = 12
    ops = fused_ops(model)
    assert "FusedAttention" not in ops
    feeds = _feeds("none")
    assert_close_everywhere(model, feeds, _atol(feeds))
