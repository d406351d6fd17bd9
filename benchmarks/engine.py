"""Engine benchmarks, Ziggurat beside onnxruntime in the same run (medians; ratios).

    python benchmarks/engine.py latency  [--models DIR] [--engines ziggurat,onnxruntime,openvino]
                                         [--only bert-base,resnet50]
    python benchmarks/engine.py reference                 # vs onnx.reference.ReferenceEvaluator
    python benchmarks/engine.py load     [--models DIR]   # model load time, BERT-base
    python benchmarks/engine.py rss      [--models DIR]   # peak RSS loading + running BERT-base
    python benchmarks/engine.py rss --models /work/qmodels --only bert-base-int8 --engines ziggurat,onnxruntime

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
from peers import ENGINES  # noqa: E402

_CHILD = """
import sys
sys.path.insert(0, {bench!r}); sys.path.insert(0, {root!r})
from common import median_ms
from peers import open_session
engine, src, batch, seq, runs = {args!r}
if src == "mlp":
    from tests.models import builders
    src = builders.mlp().SerializeToString()
elif src == "ffn-chain":
    from synthetic import ffn_chain
    src = ffn_chain().SerializeToString()
run, _ = open_session(engine, src, batch, seq)
print(median_ms(run, 3, runs))
"""

# name -> (label, model file or "mlp", batch, seq, timed runs per process)
CASES = {
    "mlp": ("tiny MLP 784-128-10, b1", "mlp", 1, 1, 3000),
    # GEMMs alone: 12 BERT-base FFN blocks (benchmarks/synthetic.py), 128 rows
    "ffn-chain": ("12 BERT-base FFN blocks (24 GEMMs), 128 rows", "ffn-chain", 1, 128, 20),
    "bert-base-16": ("BERT-base b1 seq16", "bert-base.onnx", 1, 16, 30),
    "bert-base": ("BERT-base b1 seq128", "bert-base.onnx", 1, 128, 15),
    "resnet50": ("ResNet-50 b1 224²", "resnet50.onnx", 1, 0, 20),
    "mobilenetv2": ("MobileNetV2 b1 224²", "mobilenetv2.onnx", 1, 0, 50),
    "bert-tiny": ("bert-tiny b1 seq128", "bert-tiny.onnx", 1, 128, 200),
    "gpt2": ("GPT-2 b1 seq128", "gpt2.onnx", 1, 128, 10),
    "vit-base": ("ViT-base b1 224²", "vit-base.onnx", 1, 0, 10),
    # onnxruntime's quantization tools applied to bert-base.onnx (not committed; BENCHMARKS.md
    # has the commands): quantize_dynamic and MatMulNBitsQuantizer(block_size=32).
    "bert-base-int8": (
        "BERT-base int8 (quantize_dynamic) b1 seq128",
        "bert-base-int8.onnx",
        1,
        128,
        15,
    ),
    "bert-base-nbits4": (
        "BERT-base 4-bit (MatMulNBits) b1 seq128",
        "bert-base-nbits4.onnx",
        1,
        128,
        10,
    ),
    # onnxruntime's transformers optimizer applied (benchmarks/ort_optimized.py writes them)
    "bert-base-ortopt": (
        "BERT-base, onnxruntime-optimized, b1 seq128",
        "bert-base-ortopt.onnx",
        1,
        128,
        15,
    ),
    "gpt2-ortopt": ("GPT-2, onnxruntime-optimized, b1 seq128", "gpt2-ortopt.onnx", 1, 128, 10),
    "bert-classic-ortopt": (
        "BERT-base classic export, onnxruntime-fused Attention, b1 seq128",
        "bert-classic-ortopt.onnx",
        1,
        128,
        15,
    ),
}


def _one(engine: str, src: str, batch: int, seq: int, runs: int) -> float:
    bench = os.path.dirname(os.path.abspath(__file__))
    code = _CHILD.format(
        bench=bench, root=os.path.dirname(bench), args=(engine, src, batch, seq, runs)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{engine} on {src}: {out.stderr.strip().splitlines()[-1:]}")
    return float(out.stdout.split()[-1])


def _medians(engines, src, batch, seq, runs, rounds) -> dict[str, float]:
    """Median latency (ms) of each engine, each measured in its own fresh process (so no engine's
    idle thread pool spins against another's run), alternating for ``rounds``."""
    times: dict[str, list[float]] = {e: [] for e in engines}
    for _ in range(rounds):
        for e in engines:
            times[e].append(_one(e, src, batch, seq, runs))
    return {e: float(np.median(t)) for e, t in times.items()}


def latency(models: str, engines=("ziggurat", "onnxruntime"), only=None, rounds=3) -> None:
    """One row per model: each engine's median and its ratio to onnxruntime (and to OpenVINO's
    default precision when that engine is in the run)."""
    refs = [r for r in ("onnxruntime", "openvino") if r in engines]
    ours = [e for e in engines if e.startswith("ziggurat")]
    head = [f"{e} median" for e in engines]
    head += [f"{z} / {r}" for z in ours for r in refs]
    print("| model | " + " | ".join(head) + " |")
    print("|---|" + "---|" * len(head))
    for key, (name, src, batch, seq, runs) in CASES.items():
        if only and key not in only:
            continue
        if src not in ("mlp", "ffn-chain"):
            src = os.path.join(models, src)
            if not os.path.exists(src):
                print(f"| {name} | (missing {src}) |")
                continue
        t = _medians(engines, src, batch, seq, runs, rounds)
        unit, k = ("µs", 1000) if min(t.values()) < 1 else ("ms", 1)
        cells = [f"{t[e] * k:.1f} {unit}" for e in engines]
        cells += [f"{t[z] / t[r]:.2f}x" for z in ours for r in refs]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


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
from peers import open_session
run, _ = open_session({engine!r}, {path!r}, 1, 128)
for _ in range(5):
    run()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def rss(models: str, engines=None, only=None) -> None:
    """Peak RSS of each engine on BERT-base (or on ``only``'s single CASES key, e.g. the int8
    file), each in its own process."""
    name_ = next(iter(only)) if only else "bert-base"
    path = os.path.join(models, CASES[name_][1])
    bench = os.path.dirname(os.path.abspath(__file__))
    engines = engines or ("ziggurat", "ziggurat-bf16", "onnxruntime", "openvino")
    size = os.path.getsize(path) / 2**20
    print(
        f"{os.path.basename(path)} ({size:.0f} MiB file), peak RSS after load + 5 runs at b1 seq128"
    )
    print("| engine | peak RSS | minus model size |")
    print("|---|---|---|")
    for name in engines:
        code = _RSS_SNIPPET.format(bench=bench, engine=name, path=path)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {name} | failed: {out.stderr.strip().splitlines()[-1:]} | |")
            continue
        kib = int(out.stdout.split()[-1])
        print(f"| {name} | {kib / 1024:.0f} MiB | {kib / 1024 - size:+.0f} MiB |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["latency", "reference", "load", "rss", "all"])
    parser.add_argument("--models", default="bench-models")
    parser.add_argument(
        "--engines",
        default="ziggurat,onnxruntime",
        help=f"latency: comma-separated, from {', '.join(ENGINES)}",
    )
    parser.add_argument("--only", default="", help=f"latency: models, from {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=3, help="latency: alternating rounds")
    args = parser.parse_args()

    for what in ["latency", "reference", "load", "rss"] if args.what == "all" else [args.what]:
        print(f"\n## {what}\n")
        if what == "reference":
            reference()
        elif what == "rss" and (args.only or args.engines != "ziggurat,onnxruntime"):
            rss(args.models, args.engines.split(","), set(args.only.split(",")) - {""})
        elif what == "latency":
            only = set(args.only.split(",")) - {""}
            latency(args.models, args.engines.split(","), only, args.rounds)
        else:
            globals()[what](args.models)


if __name__ == "__main__":
    main()
