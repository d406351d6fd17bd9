"""Engine benchmarks, Ziggurat beside onnxruntime in the same run (medians; ratios).

    python benchmarks/engine.py latency  [--models DIR]   # BERT-base, ResNet-50, MobileNetV2, tiny MLP
    python benchmarks/engine.py reference                 # vs onnx.reference.ReferenceEvaluator
    python benchmarks/engine.py load     [--models DIR]   # model load time, BERT-base
    python benchmarks/engine.py rss      [--models DIR]   # peak RSS loading + running BERT-base

Models under DIR come from ../shared/models/make_models.sh (see `make check-models`); the tiny
MLP and the small CNN are built in-process. Latency: each engine in its own fresh process,
alternating, 3 rounds, median of medians. Prints markdown rows for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from common import median_ms  # noqa: E402

_CHILD = """
import sys, pickle
sys.path.insert(0, {bench!r}); sys.path.insert(0, {root!r})
from common import make_feeds, median_ms
engine, src, batch, seq, runs = {args!r}
if src == "mlp":
    from tests.models import builders
    src = builders.mlp().SerializeToString()
if engine == "ziggurat":
    import ziggurat as zg
    sess = zg.InferenceSession(src)
else:
    import onnxruntime as ort
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
feeds = make_feeds(sess.get_inputs(), batch, seq)
print(median_ms(lambda: sess.run(None, feeds), 3, runs))
"""


def _one(engine: str, src: str, batch: int, seq: int, runs: int) -> float:
    bench = os.path.dirname(os.path.abspath(__file__))
    code = _CHILD.format(
        bench=bench, root=os.path.dirname(bench), args=(engine, src, batch, seq, runs)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def _pair(src: str, batch: int, seq: int, runs: int, rounds: int = 3) -> tuple[float, float]:
    """Median latency (ms) of each engine, each measured in its own fresh process (so neither
    engine's idle thread pools spin against the other's run), alternating for ``rounds``."""
    zt, rt = [], []
    for _ in range(rounds):
        zt.append(_one("ziggurat", src, batch, seq, runs))
        rt.append(_one("onnxruntime", src, batch, seq, runs))
    return float(np.median(zt)), float(np.median(rt))


def latency(models: str) -> None:
    print("| model | ziggurat median | onnxruntime median | ratio |")
    print("|---|---|---|---|")
    cases = [
        ("tiny MLP 784-128-10, b1", "mlp", 1, 1, 3000),
        ("BERT-base b1 seq128", os.path.join(models, "bert-base.onnx"), 1, 128, 15),
        ("ResNet-50 b1 224²", os.path.join(models, "resnet50.onnx"), 1, 0, 20),
        ("MobileNetV2 b1 224²", os.path.join(models, "mobilenetv2.onnx"), 1, 0, 30),
        ("bert-tiny b1 seq128", os.path.join(models, "bert-tiny.onnx"), 1, 128, 200),
    ]
    for name, src, batch, seq, runs in cases:
        if src != "mlp" and not os.path.exists(src):
            print(f"| {name} | (missing {src}) | | |")
            continue
        z, r = _pair(src, batch, seq, runs)
        unit, k = ("µs", 1000) if z < 1 else ("ms", 1)
        print(f"| {name} | {z * k:.1f} {unit} | {r * k:.1f} {unit} | {z / r:.2f}x |", flush=True)


def reference() -> None:
    import onnx.reference

    import ziggurat as zg
    from tests.models import builders

    print("| model | ziggurat | ReferenceEvaluator | speed-up |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    cases = [
        ("tiny MLP b1", builders.mlp(), {"x": rng.standard_normal((1, 784)).astype(np.float32)}),
        ("small CNN b2 32²", builders.small_cnn(),
         {"x": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}),
        ("transformer block b2 seq64", builders.transformer_block(),
         {"x": rng.standard_normal((2, 64, 64)).astype(np.float32), "mask": np.ones((2, 64), np.int64)}),
    ]  # fmt: skip
    for name, model, feeds in cases:
        zs = zg.InferenceSession(model.SerializeToString())
        ref = onnx.reference.ReferenceEvaluator(model)
        z = median_ms(lambda zs=zs, feeds=feeds: zs.run(None, feeds), 5, 50)
        r = median_ms(lambda ref=ref, feeds=feeds: ref.run(None, feeds), 5, 50)
        print(f"| {name} | {z:.3f} ms | {r:.3f} ms | {r / z:.1f}x |", flush=True)


_LOAD_SNIPPET = """
import sys, time
t0 = time.perf_counter()
{imports}
t1 = time.perf_counter()
{load}
t2 = time.perf_counter()
print(f"{{t1 - t0:.4f}} {{t2 - t1:.4f}}")
"""


def _child(imports: str, load: str) -> tuple[float, float]:
    code = _LOAD_SNIPPET.format(imports=imports, load=load)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    a, b = out.stdout.split()
    return float(a), float(b)


def load(models: str) -> None:
    path = os.path.join(models, "bert-base.onnx")
    size = os.path.getsize(path) / 1e6
    rows = {
        "ziggurat load_model (parse, weights mapped)": (
            "from ziggurat.formats.onnx import load_model",
            f"load_model({path!r})",
        ),
        "ziggurat InferenceSession (parse + optimize + compile)": (
            "import ziggurat as zg",
            f"zg.InferenceSession({path!r})",
        ),
        "onnx.load": ("import onnx", f"onnx.load({path!r})"),
        "onnxruntime InferenceSession": (
            "import onnxruntime as ort",
            f"ort.InferenceSession({path!r}, providers=['CPUExecutionProvider'])",
        ),
    }
    print(f"BERT-base, {size:.0f} MB; median of 5 fresh processes (file in page cache)")
    print("| what | import | load |")
    print("|---|---|---|")
    for label, (imp, ld) in rows.items():
        results = [_child(imp, ld) for _ in range(5)]
        imp_t = float(np.median([r[0] for r in results]))
        load_t = float(np.median([r[1] for r in results]))
        print(f"| {label} | {imp_t * 1e3:.0f} ms | {load_t * 1e3:.0f} ms |", flush=True)


_RSS_SNIPPET = """
import resource, sys
sys.path.insert(0, {bench!r})
from common import make_feeds
{imports}
sess = {make}
feeds = make_feeds(sess.get_inputs(), 1, 128)
for _ in range(5):
    sess.run(None, feeds)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def rss(models: str) -> None:
    path = os.path.join(models, "bert-base.onnx")
    bench = os.path.dirname(os.path.abspath(__file__))
    engines = {
        "ziggurat": ("import ziggurat as zg", f"zg.InferenceSession({path!r})"),
        "onnxruntime": (
            "import onnxruntime as ort",
            f"ort.InferenceSession({path!r}, providers=['CPUExecutionProvider'])",
        ),
    }
    size = os.path.getsize(path) / 2**20
    print(f"BERT-base ({size:.0f} MiB file), peak RSS after load + 5 runs at b1 seq128")
    print("| engine | peak RSS | minus model size |")
    print("|---|---|---|")
    for name, (imp, make) in engines.items():
        code = _RSS_SNIPPET.format(bench=bench, imports=imp, make=make)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        kib = int(out.stdout.split()[-1])
        print(f"| {name} | {kib / 1024:.0f} MiB | {kib / 1024 - size:+.0f} MiB |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["latency", "reference", "load", "rss", "all"])
    parser.add_argument("--models", default="bench-models")
    args = parser.parse_args()

    for what in ["latency", "reference", "load", "rss"] if args.what == "all" else [args.what]:
        print(f"\n## {what}\n")
        fn = globals()[what]
        fn() if what == "reference" else fn(args.models)


if __name__ == "__main__":
    main()
