"""``ziggurat bench``: latency percentiles and throughput, optionally beside onnxruntime."""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from .ir import dtypes


def random_feeds(inputs, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs for NodeArgs; symbolic dims take ``dims[name]`` (default 1)."""
    rng = np.random.default_rng(seed)
    names = {dtypes.name(c): c for c in range(1, 29)}
    feeds = {}
    for arg in inputs:
        shape = [
            d if isinstance(d, int) and d >= 0 else dims.get(str(d), 1) for d in arg.shape or []
        ]
        dt = dtypes.to_numpy(names[arg.type[7:-1]])
        if dt.kind == "f":
            feeds[arg.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "b":
            feeds[arg.name] = rng.random(shape) < 0.5
        elif dt.kind in "iu":
            feeds[arg.name] = rng.integers(0, 2, size=shape).astype(dt)
        else:
            raise SystemExit(f"bench: cannot make random data for input {arg.name} ({arg.type})")
    return feeds


def _time(fn, warmup: int, runs: int, label: str) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if sys.stderr.isatty():
            print(f"\r{label}: {i + 1}/{runs}", end="", file=sys.stderr)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return times


def _summary(name: str, times: list[float]) -> str:
    ms = sorted(t * 1e3 for t in times)
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    med = statistics.median(ms)
    return f"{name:<12} median {med:9.3f} ms  p90 {p90:9.3f} ms  min {ms[0]:9.3f} ms  {1e3 / med:9.1f} runs/s"


def bench_main(args: argparse.Namespace) -> int:
    from . import InferenceSession, SessionOptions
    from .cli import DEVICE_PROVIDERS, _dims

    dims = _dims(args.dim)
    opts = SessionOptions(
        intra_op_num_threads=args.threads, precision=getattr(args, "precision", "fp32")
    )
    t0 = time.perf_counter()
    providers = DEVICE_PROVIDERS[getattr(args, "device", "cpu")]
    sess = InferenceSession(args.model, sess_options=opts, providers=providers)
    print(f"ziggurat load+compile: {(time.perf_counter() - t0) * 1e3:.1f} ms")
    feeds = random_feeds(sess.get_inputs(), dims)
    zt = _time(lambda: sess.run(None, feeds), args.warmup, args.runs, "ziggurat")
    print(_summary("ziggurat", zt))
    if args.compare == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        if args.threads:
            so.intra_op_num_threads = args.threads
        t0 = time.perf_counter()
        ref = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
        print(f"onnxruntime load: {(time.perf_counter() - t0) * 1e3:.1f} ms")
        rt = _time(lambda: ref.run(None, feeds), args.warmup, args.runs, "onnxruntime")
        print(_summary("onnxruntime", rt))
        ratio = statistics.median(zt) / statistics.median(rt)
        print(f"ratio ziggurat/onnxruntime (median latency): {ratio:.2f}x")
    return 0
