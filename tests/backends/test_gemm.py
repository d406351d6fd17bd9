"""oneDNN GEMMs (backends/cpu/gemm.py) against float64 references, the bf16 path at a bf16 bound,
precision="bf16" sessions against onnxruntime FP32, and the portable fallback without oneDNN."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest

import ziggurat as zg
from tests.models import builders
from ziggurat.backends.cpu import dnnl, gemm
from ziggurat.errors import ConfigError

needs_dnnl = pytest.mark.skipif(not dnnl.available(), reason=f"oneDNN: {dnnl.unavailable_reason()}")
needs_bf16 = pytest.mark.skipif(
    not gemm.bf16_supported(), reason="this CPU has neither AVX512-BF16 nor AMX (or no oneDNN)"
)
U32 = 2.0**-24  # float32 unit roundoff
U_BF16 = 2.0**-8  # bfloat16 unit roundoff: 8 significant bits, spacing 2^-7 in [1, 2), RNE
BF16 = np.dtype(ml_dtypes.bfloat16)


def gamma(k: int) -> float:
    """Higham's gamma_k: a k-term float32 sum of products errs by at most gamma_k * sum|terms|,
    in any summation order or blocking (so the bound holds for every BLAS and thread count)."""
    return k * U32 / (1 - k * U32)


def _erf_gelu(z):
    from math import erf

    return 0.5 * z * (1 + np.vectorize(erf)(z / np.sqrt(2)))


def _reference(x, w, b, act):
    z = x.astype(np.float64) @ w.astype(np.float64) + b
    mag = np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64) + np.abs(b)
    if act == "relu":
        return np.maximum(z, 0), mag
    if act == "gelu":
        return _erf_gelu(z), mag
    return z, mag


def _data(m=64, k=300, n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, m // 2, k), dtype=np.float32)
    w = (rng.standard_normal((k, n)) * 0.1).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    return x, w, b


@needs_dnnl
@pytest.mark.parametrize("act", ["", "relu", "gelu"])
@pytest.mark.parametrize("packed", [False, True])
def test_dense_fp32_within_the_float32_bound(act, packed):
    x, w, b = _data()
    k = w.shape[0]
    wk = gemm.pack_weight(w) if packed else w
    y = gemm.dense(x, wk, b, act)
    ref, mag = _reference(x.reshape(-1, k), w, b, act)
    # (k+1)-term sum (bias included); GELU's slope is <= 1.13 and its float32 evaluation adds a few
    # ulps of the result.
    bound = gamma(k + 1) * mag
    if act == "gelu":
        bound = 1.13 * bound + 4 * np.spacing(np.abs(ref).astype(np.float32))
    assert y.shape == x.shape[:-1] + (w.shape[1],) and y.dtype == np.float32
    assert np.all(np.abs(y.reshape(-1, w.shape[1]) - ref) <= bound)


@needs_dnnl
@pytest.mark.parametrize("act", ["", "gelu"])
def test_dense_residual_is_added_after_the_activation(act):
    """The residual post-op (passes/fuse_residual.py): act(x @ w + b) + r, one more rounding."""
    x, w, b = _data()
    k, n = w.shape
    r = np.random.default_rng(9).standard_normal(x.shape[:-1] + (n,)).astype(np.float32)
    y = gemm.dense(x, gemm.pack_weight(w), b, act, residual=r)
    ref, mag = _reference(x.reshape(-1, k), w, b, act)
    ref = ref + r.reshape(-1, n)
    bound = gamma(k + 1) * mag
    if act == "gelu":
        bound = 1.13 * bound + 4 * np.spacing(np.abs(ref).astype(np.float32))
    bound = bound + np.spacing(np.abs(ref).astype(np.float32))  # the add's own rounding
    assert np.all(np.abs(y.reshape(-1, n) - ref) <= bound)
    assert gemm.dense(x, gemm.pack_weight(w), b, act, residual=r[:1]) is None  # wrong shape


@needs_dnnl
def test_packed_weight_keeps_logical_shape_and_values():
    _, w, _ = _data()
    p = gemm.pack_weight(w)
    assert isinstance(p, gemm.PackedWeight) and p.shape == w.shape and p.dtype == np.float32
    assert not p.flags.writeable
    np.testing.assert_array_equal(p.unpacked(), w)


@needs_bf16
def test_padded_bf16_layout_survives_copies():
    """K = 301, N = 99 pad oneDNN's bf16 blocks beyond K x N: copies of the (K, N) view must
    still reach the whole packed buffer."""
    import copy

    x, w, b = _data(m=8, k=301, n=99)
    p = gemm.pack_weight(w, BF16)
    for q in (p, copy.deepcopy(p), p.copy()):
        np.testing.assert_array_equal(q.unpacked(), w.astype(BF16))
        y = gemm.dense(x, q, b).reshape(-1, 99)
        xr = x.reshape(-1, 301).astype(BF16).astype(np.float32)
        ref, mag = _reference(xr, w.astype(BF16).astype(np.float32), b, "")
        assert np.all(np.abs(y - ref) <= gamma(302) * mag)


@needs_dnnl
def test_matmul_strided_and_batched_operands():
    rng = np.random.default_rng(4)
    q = rng.standard_normal((3, 96, 64), dtype=np.float32)
    kk = rng.standard_normal((3, 96, 64), dtype=np.float32)
    kt = kk.transpose(0, 2, 1)  # a transposed view, read in place
    y = gemm.matmul(q, kt)
    ref = q.astype(np.float64) @ kt.astype(np.float64)
    mag = np.abs(q).astype(np.float64) @ np.abs(kt).astype(np.float64)
    assert y is not None and np.all(np.abs(y - ref) <= gamma(64) * mag)
    assert gemm.matmul(q[:, :2, :2], kt[:, :2, :2]) is None  # too small: numpy's job


@needs_dnnl
@pytest.mark.parametrize("scale", [0.125, 0.1, -3.0])
def test_matmul_scale_applies_to_the_product(scale):
    """scale * (q @ k_t) through the source-scale attribute, on attention's strided per-head
    views: the product within gamma_k of its magnitude, times |scale|, plus one rounding."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 96, 2, 3, 64), dtype=np.float32)
    q, kt = x[:, :, 0].transpose(0, 2, 1, 3), x[:, :, 1].transpose(0, 2, 3, 1)
    y = gemm.matmul(q, kt, scale)
    ref = float(np.float32(scale)) * (q.astype(np.float64) @ kt.astype(np.float64))
    mag = np.abs(q).astype(np.float64) @ np.abs(kt).astype(np.float64)
    assert y is not None and y.shape == (2, 3, 96, 96)
    assert np.all(np.abs(y - ref) <= abs(scale) * gamma(64) * mag * (1 + U32) + U32 * np.abs(ref))
    if scale == 0.125:  # a power of two: exactly the unscaled product, scaled
        assert np.array_equal(y, gemm.matmul(q, kt) * np.float32(scale))
    assert gemm.matmul(q[:, :2, :2], kt[:, :2, :2], 2.0) is None  # too small: numpy's job


@needs_bf16
def test_bf16_packing_rounds_to_nearest_even():
    _, w, _ = _data()
    p = gemm.pack_weight(w, BF16)
    assert p.dtype == BF16 and p.shape == w.shape and p.nbytes == w.nbytes // 2
    np.testing.assert_array_equal(p.unpacked(), w.astype(BF16))


@needs_bf16
@pytest.mark.parametrize("act", ["", "gelu"])
def test_dense_bf16_within_the_bf16_bound(act):
    x, w, b = _data(k=768, n=128)
    k = w.shape[0]
    y = gemm.dense(x, gemm.pack_weight(w, BF16), b, act).reshape(-1, w.shape[1])
    x2 = x.reshape(-1, k)
    # 1) Exactly what bf16 GEMMs promise: the products of bf16-rounded inputs are exact in float32
    #    (8 x 8 significant bits), so only the float32 accumulation errs.
    xr, wr = x2.astype(BF16).astype(np.float32), w.astype(BF16).astype(np.float32)
    ref_r, mag_r = _reference(xr, wr, b, act)
    bound = gamma(k + 1) * mag_r
    if act == "gelu":
        bound = 1.13 * bound + 4 * np.spacing(np.abs(ref_r).astype(np.float32))
    assert np.all(np.abs(y - ref_r) <= bound)
    # 2) Against the float32 inputs: each product carries the two inputs' rounding, (1 + u)^2 - 1
    #    relative, independent of K.
    ref, mag = _reference(x2, w, b, act)
    rel = 2 * U_BF16 + U_BF16**2
    assert np.all(
        np.abs(y - ref) <= 1.13 * (rel + gamma(k + 1)) * mag + 4 * np.spacing(np.float32(1))
    )


def _block(hidden=512, heads=8):
    return builders.transformer_block(seed=5, hidden=hidden, heads=heads).SerializeToString()


def _feeds(seq=32, hidden=512):
    rng = np.random.default_rng(6)
    mask = np.ones((2, seq), np.int64)
    mask[1, seq // 2 :] = 0
    return {"x": rng.standard_normal((2, seq, hidden)).astype(np.float32), "mask": mask}


def _ort(model, feeds):
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@needs_dnnl
def test_bert_like_block_fp32_matches_onnxruntime():
    model, feeds = _block(), _feeds()
    ref = _ort(model, feeds)
    sess = zg.InferenceSession(model)
    got = sess.run(None, feeds)[0]
    # Every Dense weight of >= 2^18 elements is packed, in float32: the merged (512, 1536) Q/K/V
    # weight (passes/fuse_qkv.py), wo (512 x 512 = 2^18), w1 and w2.
    inits = sess._compiled.graph.initializers
    packed = [v for v in inits.values() if isinstance(v, gemm.PackedWeight)]
    assert len(packed) == 4 and all(v.dtype == np.float32 for v in packed)
    assert all(isinstance(inits[n], gemm.PackedWeight) for n in ("wo", "w1", "w2"))
    # As tests/models: float32 reductions of length <= K = 4 * hidden, two engines' independent
    # rounding, a few chained reductions: 5 * eps * sqrt(K) * max(1, max|ref|).
    atol = 5 * 2.0**-23 * np.sqrt(4 * 512) * max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)


@needs_bf16
def test_bert_like_block_bf16_is_close_to_fp32_and_holds_bf16_weights():
    model, feeds = _block(), _feeds()
    ref = _ort(model, feeds)
    sess = zg.InferenceSession(model, sess_options=zg.SessionOptions(precision="bf16"))
    got = sess.run(None, feeds)[0]
    cos = float((got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref))
    assert cos >= 0.999
    # LayerNorm output (unit scale): bf16 input rounding (2^-8 relative per product) through a
    # few GEMMs; an fp32-weights bug would be ~1e-6, a wrong layout ~1.
    assert np.abs(got - ref).max() <= 16 * 2.0**-8 * max(1.0, float(np.abs(ref).max()))
    inits = sess._compiled.graph.initializers
    packed = [v for v in inits.values() if isinstance(v, gemm.PackedWeight)]
    # q, k and v merged into one (passes/fuse_qkv.py), o, ffn1, ffn2
    assert len(packed) == 4 and all(v.dtype == BF16 for v in packed)
    assert all(inits[n].dtype == BF16 for n in ("wo", "w1", "w2"))


def test_precision_values_are_checked():
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16; got 'int4'"):
        zg.InferenceSession(_block(64), sess_options=zg.SessionOptions(precision="int4"))
    with pytest.raises(ConfigError, match="GPU providers only"):
        zg.InferenceSession(_block(64), sess_options=zg.SessionOptions(precision="fp16"))


def test_bf16_refused_on_a_cpu_without_it(monkeypatch):
    monkeypatch.setattr(gemm, "bf16_supported", lambda: False)
    monkeypatch.setattr(dnnl, "available", lambda: True)
    with pytest.raises(gemm.Bf16UnsupportedError, match="avx512_bf16 or amx_bf16") as e:
        zg.InferenceSession(_block(64), sess_options=zg.SessionOptions(precision="bf16"))
    assert isinstance(e.value, ConfigError) and "precision='fp32'" in str(e.value)


_FALLBACK = """
import numpy as np, ziggurat as zg
from tests.backends.test_gemm import _block, _feeds
from ziggurat.backends.cpu import dnnl
assert not dnnl.available()
y = zg.InferenceSession(_block()).run(None, _feeds())[0]
np.save({out!r}, y)
try:
    zg.InferenceSession(_block(), sess_options=zg.SessionOptions(precision="bf16"))
except zg.ZigguratError as e:
    print(type(e).__name__, e)
"""


def test_fallback_without_onednn_gives_the_same_results(tmp_path):
    out = tmp_path / "y.npy"
    env = dict(os.environ, ZIGGURAT_DNNL="0")
    proc = subprocess.run(
        [sys.executable, "-c", _FALLBACK.format(out=str(out))],
        env=env, capture_output=True, text=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Bf16UnsupportedError precision='bf16' needs oneDNN")
    ref = _ort(_block(), _feeds())
    atol = 5 * 2.0**-23 * np.sqrt(4 * 512) * max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(np.load(out), ref, rtol=0, atol=atol)


def test_precision_is_one_setting_across_cli_config_and_server(tmp_path):
    from ziggurat import cli, config
    from ziggurat.runtime import options
    from ziggurat.server.model import ziggurat_session

    assert config.PRECISIONS == options.PRECISIONS == cli.PRECISIONS
    args = cli.build_parser().parse_args(["bench", "m.onnx", "--precision", "bf16"])
    assert args.precision == "bf16"
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16"):
        config.Config(precision="fp8").validate()
    (tmp_path / "config.toml").write_text('precision = "bf16"\n')
    per_model = config.ModelConfig.read(tmp_path / "config.toml")
    assert per_model.resolve(config.Config())["precision"] == "bf16"
    assert config.ModelConfig().resolve(config.Config(precision="bf16"))["precision"] == "bf16"
    model = tmp_path / "block.onnx"
    model.write_bytes(_block(64))
    sess = ziggurat_session(str(model), {"precision": "fp32"})
    assert sess.get_session_options().precision == "fp32"


def _embed_matmul_model():
    """Gather from a (600, 512) table, then MatMul by a (512, 512) weight without bias."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    table = rng.standard_normal((600, 512)).astype(np.float32)
    w = (rng.standard_normal((512, 512)) * 0.05).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["e"]),
            helper.make_node("MatMul", ["e", "w"], ["y"]),
        ],
        "embed_matmul",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 40, 512])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model).SerializeToString(), table, w


@needs_bf16
def test_bf16_converts_bias_free_matmul_and_embedding_tables():
    model, table, w = _embed_matmul_model()
    ids = np.random.default_rng(8).integers(0, 600, (1, 40)).astype(np.int64)
    sess = zg.InferenceSession(model, sess_options=zg.SessionOptions(precision="bf16"))
    (y,) = sess.run(None, {"ids": ids})
    graph = sess._compiled.graph
    assert [n.op_type for n in graph.nodes] == ["Gather", "Cast", "Dense"]
    assert graph.initializers["table"].dtype == BF16
    assert isinstance(graph.initializers["w"], gemm.PackedWeight)
    # Exact for the bf16-rounded table and weight up to float32 accumulation (see above).
    e = table[ids[0]].astype(BF16).astype(np.float64)
    wr = w.astype(BF16).astype(np.float64)
    assert y.dtype == np.float32 and y.shape == (1, 40, 512)
    assert np.all(np.abs(y[0] - e @ wr) <= gamma(512) * (np.abs(e) @ np.abs(wr)))


def test_dense_kernel_uses_the_same_threshold():
    from ziggurat.ops import fused

    assert fused._NATIVE_MIN_MACS == gemm.MIN_MACS


@pytest.mark.parametrize("act", ["", "relu", "gelu"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_dense_one_row_numpy_path_within_the_float32_bound(act, with_bias):
    """The one-row (gemv) path with its inline bias/ReLU epilogue: a 1 x 784 @ 784 x 128 product
    is below the oneDNN threshold, so numpy computes it; NaN in x reaches the outputs it feeds."""
    from ziggurat.ops.fused import Dense

    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 784), dtype=np.float32)
    w = (rng.standard_normal((784, 128)) * 0.1).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    bias = b if with_bias else np.zeros(128, np.float32)
    (y,) = Dense(x, w, b if with_bias else None, activation=act)
    ref, mag = _reference(x, w, bias, act)
    bound = gamma(785) * mag
    if act == "gelu":
        bound = 1.13 * bound + 4 * np.spacing(np.abs(ref).astype(np.float32))
    assert y.shape == (1, 128) and y.dtype == np.float32
    assert np.all(np.abs(y - ref) <= bound)
    x[0, 5] = np.nan
    assert np.isnan(Dense(x, w, b if with_bias else None, activation=act)[0]).all()
