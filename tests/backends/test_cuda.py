"""The CUDA backend on a real GPU (``pytest -m cuda``; skipped without CuPy and a GPU).

Fused raw kernels are checked against the shared array kernels run by numpy in float64 (the
reference), models against onnxruntime on the CPU with the tolerance of tests/models, the pool
through sessions, and cuBLAS's float16 products for float32 accumulation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import ziggurat as zg
from tests.models import builders
from tests.models.test_models_vs_onnxruntime import _atol
from ziggurat.backends import device
from ziggurat.backends.xp_kernels import ARRAY_KERNELS, ArrayNS

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not device.available("cuda"), reason=device.why_unavailable("cuda")),
]
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
BENCH = Path(__file__).resolve().parents[2] / "bench-models"
EPS = {np.float32: float(np.finfo(np.float32).eps), np.float16: float(np.finfo(np.float16).eps)}
rng = np.random.default_rng(11)


@pytest.fixture(scope="module")
def be():
    return device.select("cuda")


def _reference(op, domain, arrays, attrs):
    from ziggurat.ops._ewmath import erf

    fn = next(f for o, d, _, f, _ in ARRAY_KERNELS if (o, d) == (op, domain))
    return fn(
        ArrayNS(np, erf), [None if a is None else a.astype(np.float64) for a in arrays], attrs
    )


def _device(be, op, domain, arrays, attrs):
    import cupy

    with be.owner_scope("test"):
        ins = [None if a is None else cupy.asarray(a) for a in arrays]
        outs = be.kernel(op, domain, 17).fn(be, ins, attrs)
        return [be.to_host(o) for o in outs]


@pytest.mark.parametrize("dt", [np.float32, np.float16])
def test_fused_norms_softmax_attention_dense(be, dt):
    eps = EPS[dt]
    x, r, g, b = (rng.standard_normal(s).astype(dt) for s in ((4, 7, 96), (4, 7, 96), 96, 96))
    got = _device(be, "SkipLayerNorm", "ziggurat", [x, r, g, b], {"n_outputs": 2})
    ref = _reference("SkipLayerNorm", "ziggurat", [x, r, g, b], {"n_outputs": 2})
    # float32 statistics over 96 values; the output rounded to dt: a few eps of |g| * 4 + |b|
    tol = 4 * eps * (4 * np.abs(g).max() + np.abs(b).max())
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=tol)
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=eps * np.abs(ref[1]).max())
    q, kt, v = (
        rng.standard_normal(s).astype(dt) for s in ((2, 3, 8, 32), (2, 3, 32, 8), (2, 3, 8, 32))
    )
    mask = np.where(rng.random((2, 1, 1, 8)) < 0.3, -10000.0, 0.0).astype(dt)
    attrs = {"scale": 32**-0.5}
    got = _device(be, "FusedAttention", "ziggurat", [q, kt, v, mask], attrs)[0]
    ref = _reference("FusedAttention", "ziggurat", [q, kt, v, mask], attrs)[0]
    # The scores (32-term dots, then rounded to dt) carry ~eps * (|s| + 32 eps |q||k|) absolute
    # error; exp turns it into that relative error of each weight; the output sums |v|-bounded
    # terms with weights summing to 1, then rounds to dt.
    s_max = float(np.abs(attrs["scale"] * (q.astype(np.float64) @ kt)).max())
    tol = 4 * eps * (s_max + 1) * np.abs(v).max() + eps * np.abs(ref).max()
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
    xw, w, bias = (
        rng.standard_normal((5, 64)).astype(dt),
        (rng.standard_normal((64, 48)) * 0.2).astype(dt),
        rng.standard_normal(48).astype(dt),
    )
    for act in ("gelu", "relu"):
        got = _device(be, "Dense", "ziggurat", [xw, w, bias], {"activation": act})[0]
        ref = _reference("Dense", "ziggurat", [xw, w, bias], {"activation": act})[0]
        bound = 2 * 64 * eps * (np.abs(xw) @ np.abs(w)) + 2 * eps * np.abs(ref) + 1e-6
        assert np.all(np.abs(got - ref) <= bound)


def test_float16_products_accumulate_in_float32(be):
    import cupy

    # 8192 * (1 + 2**-10) = 8200 is a float16 value, but a float16 running sum stalls at 2048
    # (adding ~1 to 2048 rounds back: the float16 spacing there is 2).
    a = np.ones((1, 8192), np.float16)
    b = np.full((8192, 1), 1 + 2**-10, np.float16)
    with be.owner_scope("test"):
        y = be.to_host(cupy.matmul(cupy.asarray(a), cupy.asarray(b)))
    assert y.dtype == np.float16 and float(y[0, 0]) == 8200.0


def _vs_ort(model, feeds, k, precision="fp32"):
    data = model.SerializeToString()
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    s = zg.InferenceSession(data, zg.SessionOptions(precision=precision), providers=CUDA)
    assert s.get_providers() == CUDA
    eps_ratio = 1.0 if precision == "fp32" else EPS[np.float16] / EPS[np.float32]
    for _ in range(2):
        for g, r in zip(s.run(None, feeds), ref, strict=True):
            assert g.shape == r.shape and g.dtype == r.dtype
            np.testing.assert_allclose(g, r, rtol=0, atol=_atol(r, k) * eps_ratio)
    p = s.placement()
    owner = s._compiled.owner
    backend = s._compiled.backend
    s.close()
    assert backend.pool.outstanding(owner) == []
    return p


def test_small_models_vs_onnxruntime():
    x = rng.standard_normal((5, 784)).astype(np.float32)
    assert _vs_ort(builders.mlp(), {"x": x}, 784).device_fraction() == 1.0
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert _vs_ort(builders.small_cnn(), {"x": x}, 64).device_fraction() >= 0.95
    x = rng.standard_normal((2, 16, 64)).astype(np.float32)
    mask = np.ones((2, 16), np.int64)
    mask[1, 8:] = 0
    _vs_ort(builders.transformer_block(), {"x": x, "mask": mask}, 256)
    _vs_ort(builders.transformer_block(), {"x": x, "mask": mask}, 256, precision="fp16")


@pytest.mark.skipif(not (BENCH / "bert-tiny.onnx").exists(), reason="bench-models/ not present")
def test_bert_tiny_vs_onnxruntime():
    model = onnx.load(str(BENCH / "bert-tiny.onnx"))
    ids = rng.integers(0, 1000, (2, 64)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 40:] = 0
    names = [i.name for i in model.graph.input]
    feeds = dict(zip(names, [ids, mask, np.zeros_like(ids)], strict=False))
    assert _vs_ort(model, feeds, 512).device_fraction() >= 0.95


def test_cuda_graph_replay_matches_step_by_step():
    from ziggurat.runtime.device_run import DeviceGraph

    model = builders.transformer_block(hidden=256, heads=4)
    x = rng.standard_normal((1, 128, 256)).astype(np.float32)
    mask = np.ones((1, 128), np.int64)
    s = zg.InferenceSession(model.SerializeToString(), providers=CUDA)
    plan = s._compiled.plan
    backend = s._compiled.backend
    recorded = DeviceGraph(plan.graph, plan.opsets, backend, graphs=True)
    for i in range(6):  # the 4th run records, the rest replay
        ref = s.run(None, {"x": x + i, "mask": mask})[0]
        got = recorded.run([x + i, mask])[0]
        np.testing.assert_allclose(got, ref, rtol=0, atol=_atol(ref, 1024))
    (state,) = recorded._sigs.values()
    assert state.recorded is not None and not state.graph_failed
    recorded.close()
    s.close()
    assert backend.pool.outstanding(recorded.owner) == []
