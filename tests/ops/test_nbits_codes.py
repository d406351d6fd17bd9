"""MatMulNBits with constant weights: passes/pack_nbits.py unpacks 2/4-bit codes once into
centred int8 (backends/cpu/nbits.py) and each call dequantizes them with oneDNN. The float32
weights are the unpacking path's bit for bit, so results equal that path's exactly, and
onnxruntime's within float32 rounding of the K-term sums."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import ziggurat as zg
from ziggurat.backends.cpu import dnnl, gemm, nbits
from ziggurat.ops import contrib_quant
from ziggurat.passes import pack_nbits

from ._contrib import assert_close, f32_tol
from .test_contrib_quant import _pack

_F = np.float32


def _model(rng, bits, K, N, block, zp, bias):
    n_blocks = -(-K // block)
    q = rng.integers(0, 1 << bits, (N, n_blocks * block)).astype(np.uint8)
    inits = {
        "b": _pack(q, bits).reshape(N, n_blocks, -1),
        "s": rng.uniform(0.01, 0.1, N * n_blocks).astype(_F),
    }
    zq = rng.integers(0, 1 << bits, (N, n_blocks)).astype(np.uint8)
    names = ["a", "b", "s"]
    if zp:
        inits["zp"] = _pack(zq, bits).reshape(-1)
        names.append("zp")
    if bias:
        inits["bias"] = rng.standard_normal(N).astype(_F)
        names += [""] * (5 - len(names)) + ["bias"]
    node = helper.make_node("MatMulNBits", names, ["y"], domain="com.microsoft", K=K, N=N,
                            bits=bits, block_size=block)  # fmt: skip
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("a", 1, ["m", K])],
        [helper.make_tensor_value_info("y", 1, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    zmat = zq if zp else np.full((N, n_blocks), 1 << (bits - 1), np.uint8)
    centred = q.astype(np.int16) - np.repeat(zmat, block, axis=1)
    return model.SerializeToString(), centred, inits["s"].reshape(N, n_blocks)


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("K,block", [(128, 32), (96, 16), (80, 32)])
@pytest.mark.parametrize("zp", [False, True])
def test_unpacked_codes_match_packed_path_and_onnxruntime(bits, K, block, zp, monkeypatch):
    rng = np.random.default_rng(40 + bits + K)
    N = 2500
    # slabs of 2^16 / K rows: several per weight, the last one partial
    monkeypatch.setattr(contrib_quant, "_DEQUANT_CHUNK", 1 << 16)
    model, centred, _ = _model(rng, bits, K, N, block, zp, bias=zp)
    a = rng.standard_normal((7, K)).astype(_F)
    sess = zg.InferenceSession(model)
    got = sess.run(None, {"a": a})[0]
    b = sess._compiled.graph.initializers["b"]
    eligible = K % block == 0 and dnnl.available()
    assert isinstance(b, nbits.NBitsCodes) == eligible
    if eligible:  # q - zp, exactly
        np.testing.assert_array_equal(np.asarray(b).reshape(N, -1), centred[:, :K])
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
    assert_close(got, ref, f32_tol(ref, K), f"MatMulNBits {bits}-bit K={K}")
    monkeypatch.setattr(pack_nbits, "run", lambda g, *args: g)
    plain = zg.InferenceSession(model).run(None, {"a": a})[0]
    np.testing.assert_array_equal(got, plain)


@pytest.mark.skipif(not gemm.bf16_supported(), reason="bf16 GEMMs need AVX512-BF16 or AMX")
@pytest.mark.parametrize("chunk", [1 << 16, 1 << 20], ids=["slabs", "one-slab"])
def test_bf16_session_multiplies_the_codes_in_bfloat16(chunk, monkeypatch):
    """precision="bf16": each product term carries the bfloat16 rounding of the input and of the
    dequantized weight (relative 2^-9 each), so the result is within 2^-7 of sum |a_k w_k| of the
    exact float64 product (float32 accumulation adds far less)."""
    monkeypatch.setattr(contrib_quant, "_DEQUANT_CHUNK", chunk)
    rng = np.random.default_rng(50)
    K, N, block = 128, 1200, 32
    model, centred, scales = _model(rng, 4, K, N, block, zp=True, bias=False)
    w = centred.astype(np.float64) * np.repeat(scales, block, axis=1)
    a = rng.standard_normal((9, K)).astype(_F)
    sess = zg.InferenceSession(model, zg.SessionOptions(precision="bf16"))
    b = sess._compiled.graph.initializers["b"]
    assert isinstance(b, nbits.NBitsCodes) and b.bf16
    got = sess.run(None, {"a": a})[0]
    exact = a.astype(np.float64) @ w.T
    tol = 2.0**-7 * (np.abs(a.astype(np.float64)) @ np.abs(w).T) + f32_tol(exact, K)
    assert np.all(np.abs(got - exact) <= tol)
    assert not np.array_equal(got, zg.InferenceSession(model).run(None, {"a": a})[0])  # bf16 ran


def _ffn_model(rng, K, N, block):
    """MatMulNBits -> Add(bias) -> erf GELU (as an exporter writes it), 4-bit, with zero points."""
    model, centred, scales = _model(rng, 4, K, N, block, zp=True, bias=False)
    import onnx

    m = onnx.load_from_string(model)
    g = m.graph
    g.node[0].output[0] = "mm"
    consts = {"bias": rng.standard_normal(N).astype(_F) * 0.5, "sqrt2": np.array(np.sqrt(2), _F),
              "one": np.array(1, _F), "half": np.array(0.5, _F)}  # fmt: skip
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    g.node.extend([
        helper.make_node("Add", ["bias", "mm"], ["h"]),
        helper.make_node("Div", ["h", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["h", "e1"], ["g0"]),
        helper.make_node("Mul", ["g0", "half"], ["y"]),
    ])  # fmt: skip
    w = centred.astype(np.float64) * np.repeat(scales, block, axis=1)
    return m.SerializeToString(), w, consts["bias"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bias_and_gelu_join_the_product(precision, monkeypatch):
    """MatMulNBits + bias Add + erf GELU become one NBitsDense (oneDNN epilogue): onnxruntime's
    result within float32 rounding of K terms plus erf's float32 error; in bf16, within the
    bfloat16 bound of the exact product (GELU's slope is below 1.13)."""
    if precision == "bf16" and not gemm.bf16_supported():
        pytest.skip("bf16 GEMMs need AVX512-BF16 or AMX")
    if not dnnl.available():
        pytest.skip("the unpacked codes need oneDNN")
    monkeypatch.setattr(contrib_quant, "_DEQUANT_CHUNK", 1 << 16)  # several slabs
    rng = np.random.default_rng(51)
    K, N, block = 128, 1100, 32
    model, w, bias = _ffn_model(rng, K, N, block)
    a = rng.standard_normal((10, K)).astype(_F)
    sess = zg.InferenceSession(model, zg.SessionOptions(precision=precision))
    ops = [n.op_type for n in sess._compiled.graph.nodes]
    assert ops == ["NBitsDense"], ops
    got = sess.run(None, {"a": a})[0]
    assert got.shape == (10, N) and got.dtype == np.float32
    if precision == "fp32":
        ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"a": a})
        ref = ref[0]
        tol = f32_tol(ref, K) + 4 * np.spacing(np.abs(ref)) + 1e-6 * np.abs(ref).max()
        assert_close(got, ref, tol, "NBitsDense + GELU")
        return
    from scipy.special import erf

    a64 = a.reshape(-1, K).astype(np.float64)
    pre = a64 @ w.T + bias
    exact = 0.5 * pre * (1 + erf(pre / np.sqrt(2)))
    tol = 1.13 * (2.0**-7 * (np.abs(a64) @ np.abs(w).T) + f32_tol(pre, K)) + 1e-6
    assert np.all(np.abs(got.reshape(-1, N) - exact) <= tol)


def test_nbits_dense_without_unpacked_codes_says_what_it_needs():
    a = np.ones((2, 8), np.float32)
    with pytest.raises(zg.ExecutionError, match=r"NBitsDense: expected A \(\.\.\., 8\).*got A \(2, 8\) "
                       r"and B ndarray\(4, 8\); run the model's MatMulNBits instead"):  # fmt: skip
        contrib_quant.NBitsDense(a, np.ones((4, 8), np.float32), K=8, N=4)
