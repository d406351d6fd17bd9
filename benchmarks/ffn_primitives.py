"""The floor of the FFN chain on oneDNN 3.2: its 24 bf16 matmul primitives run back to back with
no engine around them (no graph, no allocation policy, ~1 us of Python each).

    python benchmarks/ffn_primitives.py          # then: engine.py latency --only ffn-chain

The same GEMMs as ``benchmarks/synthetic.py``'s ``ffn_chain`` (12 BERT-base FFN blocks, 128
rows): the up-projection with the erf-GELU post-op, the down-projection, bf16 in and out, packed
weights. Set beside ``ziggurat-bf16`` and ``openvino`` on ``ffn-chain`` it splits the difference
into Ziggurat's per-node cost (session minus this) and the kernels' (this minus OpenVINO).
"""

from __future__ import annotations

import os
import sys

import ml_dtypes
import numpy as np

from ziggurat.backends.cpu import dnnl

sys.path.insert(0, os.path.dirname(__file__))
from common import median_ms  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
ROWS, HIDDEN, INNER, LAYERS = 128, 768, 3072, 12


def _gemm(rng, k: int, n: int, gelu: bool):
    md = dnnl.MemoryDesc
    src, dst, bias = (
        md.strided((ROWS, k), BF16),
        md.strided((ROWS, n), BF16),
        md.strided((1, n), np.float32),
    )
    attr = dnnl.Attr()
    if gelu:
        attr.eltwise(dnnl.ELTWISE_GELU_ERF)
    attr.finish()
    pd = dnnl.PrimitiveDesc(
        "dnnl_matmul_primitive_desc_create",
        dnnl.engine(),
        src,
        md.any((k, n), BF16),
        bias,
        dst,
        attr,
    )
    wmd = pd.query_md(dnnl.QUERY_WEIGHTS_MD, (k, n))
    user = md.strided((k, n), np.float32)
    weights = [
        dnnl.reorder((rng.standard_normal((k, n)) * 0.02).astype(np.float32), user, wmd)
        for _ in range(LAYERS)
    ]
    mems = {
        dnnl.ARG_SRC: dnnl.Memory(src),
        dnnl.ARG_WEIGHTS: dnnl.Memory(wmd),
        dnnl.ARG_BIAS: dnnl.Memory(bias, np.zeros(n, np.float32)),
        dnnl.ARG_DST: dnnl.Memory(dst),
    }
    return dnnl.Primitive(pd), weights, mems, dnnl.ExecArgs(mems), n


def main(runs: int = 30) -> None:
    rng = np.random.default_rng(0)
    up, down = _gemm(rng, HIDDEN, INNER, True), _gemm(rng, INNER, HIDDEN, False)
    point = dnnl.lib().dnnl_memory_set_data_handle
    x = rng.standard_normal((ROWS, HIDDEN)).astype(BF16)

    def chain():
        cur = x
        for i in range(LAYERS):
            for prim, weights, mems, args, n in (up, down):
                y = np.empty((ROWS, n), BF16)
                point(mems[dnnl.ARG_WEIGHTS].handle, dnnl.data_ptr(weights[i]))
                point(mems[dnnl.ARG_SRC].handle, dnnl.data_ptr(cur))
                point(mems[dnnl.ARG_DST].handle, dnnl.data_ptr(y))
                prim.execute_args(args)
                cur = y

    ms = median_ms(chain, 5, runs)
    print(
        f"24 oneDNN bf16 matmul primitives back to back ({up[0].pd.impl_name()}): median {ms:.2f} ms"
    )


if __name__ == "__main__":
    main()
