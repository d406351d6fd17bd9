"""How closely Ziggurat follows onnxruntime on a dynamically quantized model, beside how closely
onnxruntime follows itself at another graph-optimization level on the same file.

    python benchmarks/quant_agreement.py MODEL.onnx [--seeds 3] [--seq 128]

Dynamic quantization rounds each activation to uint8 per call: a float rounding difference
anywhere upstream (a fused vs unfused GELU, another summation order) moves an activation across a
rounding tie, one quantization step, and the step propagates through the later layers. So two
correct engines differ by a few quantization steps, and onnxruntime's own levels (ENABLE_ALL,
the default, against BASIC and DISABLE_ALL) show how far. Prints, per output, the largest
max |a - b| / max |b| over the seeds for each pair (b: onnxruntime's default).
"""

from __future__ import annotations

import argparse

import numpy as np


def _feeds(inputs, seq: int, rng) -> dict:
    """BERT-style feeds: random token ids, a full attention mask, zero token types."""
    feeds = {}
    for i in inputs:
        if "mask" in i.name:
            feeds[i.name] = np.ones((1, seq), np.int64)
        elif "type" in i.name:
            feeds[i.name] = np.zeros((1, seq), np.int64)
        else:
            feeds[i.name] = rng.integers(0, 30000, (1, seq), dtype=np.int64)
    return feeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()

    import onnxruntime as ort

    import ziggurat

    levels = ort.GraphOptimizationLevel

    def ort_session(level):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        return ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])

    ref = ort_session(levels.ORT_ENABLE_ALL)
    others = {
        "onnxruntime BASIC": ort_session(levels.ORT_ENABLE_BASIC),
        "onnxruntime DISABLE_ALL": ort_session(levels.ORT_DISABLE_ALL),
        "ziggurat": ziggurat.InferenceSession(args.model),
    }
    names = [o.name for o in ref.get_outputs()]
    worst = {label: dict.fromkeys(names, 0.0) for label in others}
    for seed in range(args.seeds):
        feeds = _feeds(ref.get_inputs(), args.seq, np.random.default_rng(seed))
        want = ref.run(None, feeds)
        for label, sess in others.items():
            for name, got, exp in zip(names, sess.run(None, feeds), want):
                rel = float(np.abs(got - exp).max() / np.abs(exp).max())
                worst[label][name] = max(worst[label][name], rel)
    print("| against onnxruntime ENABLE_ALL | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, rel in worst.items():
        print(f"| {label} | " + " | ".join(f"{rel[n]:.4f}" for n in names) + " |")


if __name__ == "__main__":
    main()
