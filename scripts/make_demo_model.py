"""Build the bundled demo model, src/ziggurat/data/digits.onnx (what `ziggurat serve` serves
with no model; `make serve` runs this first).

A small MLP that classifies 8x8 handwritten digits: input ``image`` FP32 [batch, 64] with pixel
intensities 0..16 (scikit-learn's digits layout), outputs ``probabilities`` FP32 [batch, 10] and
``label`` INT64 [batch]. Trained here with numpy on scikit-learn's bundled digits data when
scikit-learn is importable; otherwise (or with --random) the weights are seeded random numbers
so that the server still has a model to serve. Deterministic: the same inputs give the same file.

    python scripts/make_demo_model.py            # build if missing
    python scripts/make_demo_model.py --force    # rebuild
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "src" / "ziggurat" / "data" / "digits.onnx"
HIDDEN = 32


def load_digits() -> tuple[np.ndarray, np.ndarray] | None:
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        return None
    d = sk_digits()
    return d.data.astype(np.float32), d.target.astype(np.int64)


def train(x: np.ndarray, y: np.ndarray, epochs: int = 300, seed: int = 0):
    """Full-batch Adam on softmax cross-entropy; returns weights and held-out accuracy."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    x, y = x[order] / 16.0, y[order]
    n_train = int(len(x) * 0.8)
    xt, yt, xv, yv = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    params = [
        rng.standard_normal((64, HIDDEN)) * np.sqrt(2 / 64),
        np.zeros(HIDDEN),
        rng.standard_normal((HIDDEN, 10)) * np.sqrt(2 / HIDDEN),
        np.zeros(10),
    ]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    onehot = np.eye(10)[yt]
    for step in range(1, epochs + 1):
        w1, b1, w2, b2 = params
        h = np.maximum(xt @ w1 + b1, 0)
        logits = h @ w2 + b2
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g_logits = (p - onehot) / len(xt)
        g_h = (g_logits @ w2.T) * (h > 0)
        grads = [xt.T @ g_h + 1e-4 * w1, g_h.sum(0), h.T @ g_logits + 1e-4 * w2, g_logits.sum(0)]
        for i, g in enumerate(grads):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            mhat, vhat = m[i] / (1 - 0.9**step), v[i] / (1 - 0.999**step)
            params[i] = params[i] - 0.01 * mhat / (np.sqrt(vhat) + 1e-8)
    w1, b1, w2, b2 = params
    pred = (np.maximum(xv @ w1 + b1, 0) @ w2 + b2).argmax(1)
    return [p.astype(np.float32) for p in params], float((pred == yv).mean())


def random_weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((64, HIDDEN)) * 0.2).astype(np.float32),
        np.zeros(HIDDEN, np.float32),
        (rng.standard_normal((HIDDEN, 10)) * 0.2).astype(np.float32),
        np.zeros(10, np.float32),
    ]


def build(weights, note: str) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, b1, w2, b2 = weights
    nodes = [
        helper.make_node("Div", ["image", "scale"], ["x"], name="scale"),
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["a"], name="relu"),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"], name="fc2"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1, name="softmax"),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0, name="argmax"),
    ]
    inits = [
        numpy_helper.from_array(np.array(16.0, np.float32), "scale"),
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
    ]
    graph = helper.make_graph(
        nodes,
        "digits",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 64])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        inits,
        doc_string="8x8 digit classifier; image: 64 pixel intensities 0..16, row-major",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="ziggurat scripts/make_demo_model.py",
    )
    model.ir_version = 8
    helper.set_model_props(model, {"training": note})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if the file exists")
    ap.add_argument("--random", action="store_true", help="seeded random weights, no training")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.out.is_file() and not args.force:
        print(f"demo model present: {args.out}")
        return 0
    data = None if args.random else load_digits()
    if data is None:
        weights, note = random_weights(), "untrained (seeded random weights)"
        if not args.random:
            print("scikit-learn not installed: writing an untrained MLP", file=sys.stderr)
    else:
        weights, acc = train(*data)
        note = f"trained on scikit-learn digits, held-out accuracy {acc:.3f}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(build(weights, note))
    print(f"wrote {args.out} ({note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
