"""The ctypes layer over oneDNN: loading, fallback, memory descriptors, matmul, reorder, errors."""

from __future__ import annotations

import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from ziggurat.backends.cpu import dnnl

needs_dnnl = pytest.mark.skipif(not dnnl.available(), reason=f"oneDNN: {dnnl.unavailable_reason()}")
U32 = 2.0**-24  # unit roundoff of float32


def gamma(k: int) -> float:
    """Higham's gamma_k: a k-term float32 dot product in any order errs by at most
    gamma_k * sum(|a_i * b_i|)."""
    return k * U32 / (1 - k * U32)


def test_disabled_by_env_var_is_a_clear_fallback():
    code = (
        "from ziggurat.backends.cpu import dnnl; print(dnnl.available(), dnnl.unavailable_reason())"
    )
    env = dict(os.environ, ZIGGURAT_DNNL="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False oneDNN disabled by ZIGGURAT_DNNL=0"


def test_missing_library_names_what_was_tried():
    code = (
        "from ziggurat.backends.cpu import dnnl; print(dnnl.available(), dnnl.unavailable_reason())"
    )
    env = dict(os.environ, ZIGGURAT_DNNL_PATH="/nonexistent/libdnnl.so.3")
    env.pop("ZIGGURAT_DNNL", None)  # a run with oneDNN switched off still tests the search
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.startswith("False libdnnl.so not found"), out.stdout + out.stderr
    assert "/nonexistent/libdnnl.so.3" in out.stdout


def test_import_does_not_load_the_library():
    code = "import ziggurat, sys; from ziggurat.backends.cpu import dnnl; print(dnnl._state)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "{}", out.stdout + out.stderr


@needs_dnnl
def test_info_reports_version_3():
    info = dnnl.info()
    assert info["available"] and info["version"].startswith("3.")
    assert info["isa"]


@needs_dnnl
@pytest.mark.parametrize("post", ["", "relu", "gelu"])
def test_matmul_primitive_fp32_with_bias_and_activation(post):
    rng = np.random.default_rng(1)
    m, k, n = 37, 301, 53
    a = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((k, n), dtype=np.float32)
    b = rng.standard_normal((1, n), dtype=np.float32)
    y = np.empty((m, n), np.float32)
    attr = dnnl.Attr()
    if post:
        attr.eltwise(dnnl.ELTWISE_RELU if post == "relu" else dnnl.ELTWISE_GELU_ERF)
    attr.finish()
    md = [dnnl.MemoryDesc.from_array(t) for t in (a, w, b, y)]
    pd = dnnl.PrimitiveDesc("dnnl_matmul_primitive_desc_create", dnnl.engine(), *md, attr)
    prim = dnnl.Primitive(pd)
    prim.execute({k_: dnnl.Memory(d, t) for k_, d, t in zip(
        (dnnl.ARG_SRC, dnnl.ARG_WEIGHTS, dnnl.ARG_BIAS, dnnl.ARG_DST), md, (a, w, b, y))})  # fmt: skip

    z = a.astype(np.float64) @ w + b
    # Worst case of a (k+1)-term sum (bias included) in float32, whatever the order and blocking.
    bound = gamma(k + 1) * (np.abs(a).astype(np.float64) @ np.abs(w) + np.abs(b))
    if post == "relu":
        ref = np.maximum(z, 0)
    elif post == "gelu":
        from math import erf

        ref = 0.5 * z * (1 + np.vectorize(erf)(z / np.sqrt(2)))
        # GELU's slope is at most 1.13; its own float32 evaluation adds a few ulps of the result.
        bound = 1.13 * bound + 4 * np.spacing(np.abs(ref).astype(np.float32))
    else:
        ref = z
    assert np.all(np.abs(y - ref) <= bound)


@needs_dnnl
def test_reorder_to_bf16_rounds_like_ml_dtypes():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 96), dtype=np.float32)
    dst_md = dnnl.MemoryDesc.strided(x.shape, ml_dtypes.bfloat16)
    raw = dnnl.reorder(x, dnnl.MemoryDesc.from_array(x), dst_md)
    got = raw.view(ml_dtypes.bfloat16).reshape(x.shape)
    np.testing.assert_array_equal(got, x.astype(ml_dtypes.bfloat16))
    assert raw.ctypes.data % 64 == 0


@needs_dnnl
def test_error_status_names_the_call():
    a = dnnl.MemoryDesc.strided((4, 5), np.float32)
    w = dnnl.MemoryDesc.strided((6, 7), np.float32)  # inner dims differ
    y = dnnl.MemoryDesc.strided((4, 7), np.float32)
    with pytest.raises(dnnl.DnnlError, match="dnnl_matmul_primitive_desc_create failed: invalid"):
        dnnl.PrimitiveDesc(
            "dnnl_matmul_primitive_desc_create",
            dnnl.engine(),
            a.handle,
            w.handle,
            None,
            y.handle,
            None,
        )


def test_unknown_dtype_is_refused():
    with pytest.raises(dnnl.DnnlError, match="no data type for numpy float64"):
        dnnl.dtype_code(np.float64)
