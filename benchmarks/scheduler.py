"""Sequential executor vs the parallel scheduler (inter-op threads), medians in the same run.

    python benchmarks/scheduler.py [--threads N] [--runs N]

Models: the onnx package's light Inception v1 (four-branch inception blocks), a synthetic model with
two independent branches of MatMul+Tanh (heavy), the same with tiny tensors (pure scheduling
overhead per run), and a straight line (which the scheduler runs as the sequential code). With
onnxruntime importable, its ORT_SEQUENTIAL vs ORT_PARALLEL on Inception v1 is printed alongside.
Both modes are timed twice: with BLAS on all cores (parallel branches then oversubscribe the
cores), and with BLAS limited to cores // inter-op threads. Rounds of all variants are interleaved
so machine noise hits them alike.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import onnx  # noqa: E402
from common import median_ms  # noqa: E402

from ziggurat import ir  # noqa: E402
from ziggurat.formats.onnx import load_model  # noqa: E402
from ziggurat.passes import optimize  # noqa: E402
from ziggurat.runtime import CompiledGraph  # noqa: E402
from ziggurat.runtime.scheduler import ParallelGraph, default_threads  # noqa: E402

INCEPTION = os.path.join(
    os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_inception_v1.onnx"
)


def _vi(name, shape=None):
    return ir.ValueInfo(name, ir.Type("tensor", ir.dtypes.FLOAT, shape))


def branches(width: int, depth: int, size: int) -> tuple[ir.Graph, dict[str, int], list]:
    """x -> ``width`` independent branches of ``depth`` (MatMul, Tanh) -> Sum."""
    rng = np.random.default_rng(0)
    nodes, inits, heads = [], {}, []
    for b in range(width):
        prev = "x"
        for d in range(depth):
            w = f"w{b}_{d}"
            inits[w] = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
            nodes.append(ir.Node("MatMul", [prev, w], [f"m{b}_{d}"]))
            nodes.append(ir.Node("Tanh", [f"m{b}_{d}"], [f"t{b}_{d}"]))
            prev = f"t{b}_{d}"
        heads.append(prev)
    nodes.append(ir.Node("Sum", heads, ["y"]))
    g = ir.Graph(nodes, [_vi("x", [size, size])], [_vi("y")], inits, name="branches")
    x = rng.standard_normal((size, size)).astype(np.float32)
    return g, {"": 17}, [x]


def inception() -> tuple[ir.Graph, dict[str, int], list]:
    model = load_model(INCEPTION)
    graph = optimize(model.graph, model.opsets)
    shape = list(graph.inputs[0].type.shape)
    n = int(np.prod(shape))
    return graph, model.opsets, [(np.arange(n, dtype=np.float32) / n).reshape(shape)]


def _interleaved(variants: dict, runs: int) -> dict[str, float]:
    """Median ms of each ``name -> (fn, blas_limit)``, rounds interleaved so noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(3):
        for name, (fn, blas) in variants.items():
            with threadpool_limits(limits=blas, user_api="blas"):
                times[name].append(median_ms(fn, 2, max(1, runs // 3)))
    return {name: float(np.median(t)) for name, t in times.items()}


def _row(name: str, nodes: Any, chains: Any, t: dict[str, float]) -> None:
    s, p, sb, pb = t["seq"], t["par"], t["seq_blas"], t["par_blas"]
    print(
        f"| {name} | {nodes} | {chains} | {s:.3f} | {p:.3f} ({s / p:.2f}x) | {sb:.3f} "
        f"| {pb:.3f} ({sb / pb:.2f}x) |",
        flush=True,
    )


def compare(name: str, build, threads: int, blas: int, runs: int) -> None:
    graph, opsets, inputs = build()
    seq = CompiledGraph(graph, opsets, model_name=name)
    par = ParallelGraph(graph, opsets, model_name=name, threads=threads)
    for a, b in zip(seq.run(inputs), par.run(inputs)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    t = _interleaved(
        {
            "seq": (lambda: seq.run(inputs), None),
            "par": (lambda: par.run(inputs), None),
            "seq_blas": (lambda: seq.run(inputs), blas),
            "par_blas": (lambda: par.run(inputs), blas),
        },
        runs,
    )
    _row(name, len(graph.nodes), len(par._chains) if par.parallel else 1, t)


def ort_inception(threads: int, blas: int, runs: int) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        return
    x = inception()[2][0]
    variants = {}
    for key, mode, intra in (
        ("seq", "ORT_SEQUENTIAL", 0),
        ("par", "ORT_PARALLEL", 0),
        ("seq_blas", "ORT_SEQUENTIAL", blas),
        ("par_blas", "ORT_PARALLEL", blas),
    ):
        opts = ort.SessionOptions()
        opts.execution_mode = getattr(ort.ExecutionMode, mode)
        opts.inter_op_num_threads = threads
        opts.intra_op_num_threads = intra
        sess = ort.InferenceSession(INCEPTION, opts, providers=["CPUExecutionProvider"])
        feeds = {sess.get_inputs()[0].name: x}
        variants[key] = (lambda sess=sess, feeds=feeds: sess.run(None, feeds), None)
    _row("onnxruntime, inception_v1 (light)", "", "", _interleaved(variants, runs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="inter-op threads (0: all cores)")
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    threads = args.threads or default_threads()
    blas = max(1, default_threads() // threads)
    print(
        f"inter-op threads: {threads}; 'BLAS {blas}': BLAS (onnxruntime: intra-op threads) "
        f"limited to {blas} thread(s), else BLAS on all cores; speedups vs sequential, same BLAS"
    )
    print(
        "| model | nodes | chains | sequential ms | parallel ms | "
        f"sequential, BLAS {blas} ms | parallel, BLAS {blas} ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    compare("inception_v1 (light)", inception, threads, blas, args.runs)
    compare("two branches, 4x(MatMul+Tanh) 512²", lambda: branches(2, 4, 512), threads, blas,
            args.runs)  # fmt: skip
    compare("four branches, 4x(MatMul+Tanh) 8² (overhead)", lambda: branches(4, 4, 8), threads,
            blas, args.runs * 20)  # fmt: skip
    compare("straight line, 8x(MatMul+Tanh) 8²", lambda: branches(1, 8, 8), threads, blas,
            args.runs * 20)  # fmt: skip
    ort_inception(threads, blas, args.runs)


if __name__ == "__main__":
    main()
