"""GPU latency: BERT-base (seq 128, batch 1) and ResNet-50 (batch 1), Ziggurat's CUDA backend in
fp16 and fp32, and onnxruntime-gpu's CUDA provider in the same run when it is installed.

Each (engine, model, precision) runs in its own fresh process (as benchmarks/engine.py does on
the CPU): warm-up runs, then the median of timed runs of ``session.run`` with host inputs and
host outputs (so every run includes the copies and a device synchronisation). Models come from
bench-models/ when present, else from benchmarks/gpu/models.py (same shapes, random weights).

    python benchmarks/gpu/bench.py --out results.json [--runs 200] [--models bert-base resnet50]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("bert-base", "resnet50")
# ziggurat+graphs: ZIGGURAT_DEVICE_GRAPHS=1, each signature's work replayed as one CUDA graph.
CONFIGS = [
    ("ziggurat", "fp16"),
    ("ziggurat+graphs", "fp16"),
    ("ziggurat", "fp32"),
    ("ziggurat+graphs", "fp32"),
    ("onnxruntime", "fp16"),
    ("onnxruntime", "fp32"),
]


def model_file(name: str, workdir: Path) -> tuple[Path, str]:
    """(path, origin): the real file from bench-models/, else a built one."""
    real = ROOT / "bench-models" / f"{name}.onnx"
    if real.exists():
        return real, "bench-models"
    path = workdir / f"{name}-random.onnx"
    if not path.exists():
        sys.path.insert(0, str(Path(__file__).parent))
        import models

        model = models.bert_base() if name == "bert-base" else models.resnet50()
        import onnx

        onnx.save(model, str(path))
    return path, "built (random weights, same shapes)"


def feeds_for(session, name: str):
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    for a in session.get_inputs():
        shape = [1 if not isinstance(d, int) or d < 0 else d for d in a.shape]
        if name == "bert-base" and len(shape) >= 2:
            shape[1] = 128  # seq
        if "int64" in a.type:
            out[a.name] = (np.ones(shape, np.int64) if "mask" in a.name
                           else rng.integers(0, 1000, shape).astype(np.int64))  # fmt: skip
        else:
            out[a.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def child(engine: str, precision: str, path: str, name: str, warmup: int, runs: int) -> dict:
    """One measurement, in this (fresh) process."""
    if engine.startswith("ziggurat"):
        if engine == "ziggurat+graphs":
            os.environ["ZIGGURAT_DEVICE_GRAPHS"] = "1"  # read when ziggurat is imported
        sys.path.insert(0, str(ROOT / "src"))
        import ziggurat as zg

        opts = zg.SessionOptions(precision=precision)
        sess = zg.InferenceSession(path, opts, providers=["CUDAExecutionProvider"])
        if sess.get_providers()[0] != "CUDAExecutionProvider":
            return {"error": "CUDAExecutionProvider not available"}
    else:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return {"error": "onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu?)"}
        if precision == "fp16":
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            m16 = convert_float_to_float16(onnx.load(path), keep_io_types=True)
            path = str(Path(tempfile.mkdtemp()) / "model16.onnx")
            onnx.save(m16, path)
        sess = ort.InferenceSession(path, providers=["CUDAExecutionProvider"])
    feeds = feeds_for(sess, name)
    for _ in range(warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    out = {"median_ms": statistics.median(times), "min_ms": min(times), "runs": runs}
    if engine.startswith("ziggurat"):
        p = sess.placement()
        out["placed"] = round(p.device_fraction(), 3)
        out["fallbacks"] = [f"{r['op']}: {r['reason']}" for r in p.report() if r["where"] == "cpu"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_bench.json")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--child", nargs=4, metavar=("ENGINE", "PRECISION", "PATH", "NAME"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.warmup, args.runs)))
        return 0
    results = []
    work = Path(tempfile.mkdtemp(prefix="zg-gpu-"))
    for name in args.models:
        path, origin = model_file(name, work)
        for engine, precision in CONFIGS:
            cmd = [sys.executable, __file__, "--child", engine, precision, str(path), name,
                   "--warmup", str(args.warmup), "--runs", str(args.runs)]  # fmt: skip
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                                      env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                row = {"error": "over 120 s"}
            except (IndexError, json.JSONDecodeError):
                row = {"error": (proc.stderr or proc.stdout)[-1500:]}
            row.update(model=name, origin=origin, engine=engine, precision=precision)
            results.append(row)
            print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
