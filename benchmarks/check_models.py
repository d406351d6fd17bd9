"""Check the benchmark models exported by ../shared/models/make_models.sh against onnxruntime.

    python benchmarks/check_models.py DIR [NAME ...]

For each DIR/NAME.onnx: same seeded inputs through Ziggurat and onnxruntime; passes when every
output matches within 1e-3 of the output's scale (max |expected|). Prints one line per model and a
markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import glob
import os
import sys
import time

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(__file__))
from common import make_feeds, median_ms  # noqa: E402

import ziggurat as zg  # noqa: E402


def check(path: str) -> tuple[bool, str]:
    name = os.path.basename(path)[:-5]
    t0 = time.perf_counter()
    sess = zg.InferenceSession(path)
    load = time.perf_counter() - t0
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = make_feeds(ref.get_inputs(), batch=1, seq=128)
    expected = ref.run(None, feeds)
    got = sess.run(None, feeds)
    worst = 0.0
    for e, g in zip(expected, got):
        scale = max(float(np.abs(e).max()), 1e-6)
        worst = max(worst, float(np.abs(e.astype(np.float64) - g).max()) / scale)
    ok = worst <= 1e-3
    zt = median_ms(lambda: sess.run(None, feeds), warmup=2, runs=10)
    rt = median_ms(lambda: ref.run(None, feeds), warmup=2, runs=10)
    line = (
        f"| {name} | {'match' if ok else 'MISMATCH'} | {worst:.2e} | {load * 1e3:.0f} ms "
        f"| {zt:.1f} ms | {rt:.1f} ms | {zt / rt:.2f}x |"
    )
    return ok, line


def main(argv: list[str]) -> int:
    folder = argv[0] if argv else "bench-models"
    names = argv[1:]
    paths = sorted(glob.glob(os.path.join(folder, "*.onnx")))
    if names:
        paths = [p for p in paths if os.path.basename(p)[:-5] in names]
    if not paths:
        print(f"no models under {folder}; run `make check-models` or make_models.sh first")
        return 1
    print(
        "| model | vs onnxruntime | max err / scale | ziggurat load | ziggurat median | onnxruntime median | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    failed = 0
    for p in paths:
        try:
            ok, line = check(p)
        except zg.ZigguratError as exc:
            ok, line = (
                False,
                f"| {os.path.basename(p)} | ERROR | {str(exc).splitlines()[0]} | | | | |",
            )
        failed += not ok
        print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
