"""Placement and accuracy of real models on the Vulkan backend, against the CPU.

For each model: how many nodes the session places on the device, on the host (shape arithmetic)
and on the CPU (fallbacks, with their reasons), the copies per run, the largest relative error of
each float output (max |device - cpu| / max |cpu|), and whether closing the session left device
blocks behind. On lavapipe this measures correctness, never speed (it is 40-700x slower than
numpy); the first-run time is printed only so a stuck run is visible.

    .venv/bin/python benchmarks/vulkan_placement.py bench-models/bert-tiny.onnx \\
        bench-models/mobilenetv2.onnx src/ziggurat/data/digits.onnx
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def feeds_for(sess, seq: int, batch: int) -> dict[str, np.ndarray]:
    """Seeded inputs: symbolic dims named like a sequence get ``seq``, others ``batch``; int64
    inputs are token ids (masks all ones)."""
    rng = np.random.default_rng(0)
    out = {}
    for i in sess.get_inputs():
        shape = [
            d if isinstance(d, int) else (seq if "seq" in str(d).lower() else batch)
            for d in i.shape
        ]
        if "int64" in i.type:
            out[i.name] = (
                np.ones(shape, np.int64)
                if "mask" in i.name
                else rng.integers(0, 100, shape).astype(np.int64)
            )
        elif i.name == "image":  # the demo model: pixel intensities 0..16
            out[i.name] = rng.uniform(0, 16, shape).astype(np.float32)
        else:
            out[i.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def measure(path: str, seq: int, batch: int) -> None:
    import ziggurat as zg
    from ziggurat.backends import vulkan

    cpu = zg.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = feeds_for(cpu, seq, batch)
    want = cpu.run(None, feeds)
    start = time.perf_counter()
    sess = zg.InferenceSession(path, providers=["WebGpuExecutionProvider", "CPUExecutionProvider"])
    got = sess.run(None, feeds)
    first = time.perf_counter() - start
    placement = sess.placement()
    lines = placement.text().splitlines()
    print(f"== {path} ({sess.get_providers()[0]}, first run {first:.1f} s)")
    print("  " + lines[0])
    for line in lines[1:]:
        if "[CPU" in line:
            print("  " + line.strip())
    for name, g, w in zip(sess.get_outputs(), got, want, strict=True):
        if w.dtype.kind == "f":
            rel = np.abs(g - w).max() / max(np.abs(w).max(), np.finfo(np.float32).tiny)
            print(f"  output {name.name} {list(w.shape)}: max relative error {rel:.2e}")
        else:
            print(f"  output {name.name} {list(w.shape)}: equal {np.array_equal(g, w)}")
    owner = sess._compiled.owner
    sess.close()
    print(f"  device blocks left after close: {len(vulkan.open_backend().pool.outstanding(owner))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--seq", type=int, default=16, help="size of sequence-like dims")
    ap.add_argument("--batch", type=int, default=1, help="size of other symbolic dims")
    args = ap.parse_args()
    from ziggurat.backends import vulkan

    if not vulkan.available():
        raise SystemExit(f"no Vulkan adapter: {vulkan.unavailable_reason()}")
    for path in args.models:
        measure(path, args.seq, args.batch)


if __name__ == "__main__":
    main()
