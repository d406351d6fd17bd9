"""Whole models placed on the Vulkan device through the session (``providers=[
"WebGpuExecutionProvider", ...]``, runtime/placement.py): a small BERT (fused by the engine's
passes into Dense, FusedAttention, SkipLayerNorm...), a MobileNet-like CNN (conv + BN fused into
FusedConv, depthwise, residual, clip, pools) and the bundled demo model, against the CPU.

The issue's goal: outputs within 1e-3 relative of the CPU's (max |error| / max |output|), with
>= 95 % of the nodes placed on the device, and no device bytes left after the session closes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

import ziggurat as zg
from tests.models.builders import small_cnn, transformer_block
from tests.ops._mini_bert import mini_bert

PROVIDERS = ["WebGpuExecutionProvider", "CPUExecutionProvider"]
DEMO = Path(zg.__file__).parent / "data" / "digits.onnx"
RNG = np.random.default_rng(23)


def _run_both(be, model, feeds, min_fraction=0.95):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    want = zg.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    sess = zg.InferenceSession(data, providers=PROVIDERS)
    assert sess.get_providers()[0] == "WebGpuExecutionProvider"
    got = sess.run(None, feeds)
    again = sess.run(None, feeds)  # the kept placement and the pool's cached blocks
    placement = sess.placement()
    assert placement.device_fraction() >= min_fraction, placement.text()
    owner = sess._compiled.owner
    sess.close()
    assert be.pool.outstanding(owner) == [], "device blocks left after close"
    for g, a, w in zip(got, again, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, a)  # same kernels, same order: same bits
        if w.dtype.kind == "f":
            rel = np.abs(g - w).max() / max(np.abs(w).max(), np.finfo(np.float32).tiny)
            assert rel <= 1e-3, f"relative error {rel:.3g}"
        else:
            np.testing.assert_array_equal(g, w)
    return placement


def test_small_bert(be):
    seq = 8
    feeds = {
        "input_ids": RNG.integers(0, 50, (2, seq)).astype(np.int64),
        "token_type_ids": RNG.integers(0, 2, (2, seq)).astype(np.int64),
        "attention_mask": np.array([[1] * seq, [1] * 5 + [0] * 3], np.int64),
    }
    placement = _run_both(be, mini_bert(seq=seq), feeds)
    ops = {s.op for s in placement.steps if s.where == "device"}
    assert {"ziggurat::FusedAttention", "ziggurat::Dense"} <= ops, sorted(ops)


def test_transformer_block(be):
    x = RNG.standard_normal((1, 6, 64)).astype(np.float32)
    _run_both(be, transformer_block(), {"x": x, "mask": np.ones((1, 6), np.int64)})


def test_mobilenet_like_cnn(be):
    x = RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)
    placement = _run_both(be, small_cnn(), {"x": x})
    ops = {s.op for s in placement.steps if s.where == "device"}
    assert "ziggurat::FusedConv" in ops, sorted(ops)


def test_demo_model(be):
    x = RNG.uniform(0, 16, (5, 64)).astype(np.float32)
    _run_both(be, DEMO.read_bytes(), {"image": x}, min_fraction=1.0)


def test_unsupported_node_falls_back_with_copies(be):
    # TopK has no Vulkan kernel and float64 is refused: both run on the CPU, between device steps
    from onnx import TensorProto, helper

    n = helper.make_node
    nodes = [
        n("Relu", ["x"], ["r"]),
        n("TopK", ["r", "k"], ["v", "i"], axis=1),
        n("Cast", ["v"], ["v64"], to=TensorProto.DOUBLE),
        n("Sqrt", ["v64"], ["s64"]),
        n("Cast", ["s64"], ["s"], to=TensorProto.FLOAT),
        n("Mul", ["s", "s"], ["y"]),
    ]
    g = helper.make_graph(
        nodes, "fallback",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [onnx.numpy_helper.from_array(np.array([3], np.int64), "k")],
    )  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    placement = _run_both(be, model, {"x": x}, min_fraction=0.0)
    where = {s.op: (s.where, s.reason) for s in placement.steps}
    assert where["Relu"][0] == where["Mul"][0] == "device"
    assert where["TopK"][0] == "cpu" and "no vulkan kernel" in where["TopK"][1]
    assert where["Sqrt"] == ("cpu", "float64: WGSL has no f64")
    assert placement.uploads >= 2 and placement.downloads >= 2


def test_bert_fused_by_onnxruntimes_optimizer(be):
    """The classic BERT export after onnxruntime's transformers optimizer: EmbedLayerNormalization,
    Attention with its mask, SkipLayerNormalization and BiasGelu all on the device, as the Dense,
    FusedAttention and SkipLayerNorm that passes/contrib_canon.py rewrites them into."""
    import logging

    from onnxruntime.transformers.optimizer import optimize_model

    from tests.ops._mini_bert import HEADS, HIDDEN

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    opt = optimize_model(mini_bert(), model_type="bert", num_heads=HEADS, hidden_size=HIDDEN,
                         opt_level=0).model  # fmt: skip
    names = {i.name for i in opt.graph.input}
    feeds = {
        "input_ids": RNG.integers(0, 50, (2, 8)).astype(np.int64),
        "token_type_ids": RNG.integers(0, 2, (2, 8)).astype(np.int64),
        "attention_mask": np.array([[1] * 8, [1] * 5 + [0] * 3], np.int64),
    }
    placement = _run_both(be, opt, {k: v for k, v in feeds.items() if k in names})
    ops = {s.op for s in placement.steps if s.where == "device"}
    wanted = {"com.microsoft::EmbedLayerNormalization", "ziggurat::FusedAttention",
              "ziggurat::SkipLayerNorm", "ziggurat::Dense"}  # fmt: skip
    assert wanted <= ops, (sorted(ops), placement.text())
    left = {"com.microsoft::Attention", "com.microsoft::BiasGelu",
            "com.microsoft::SkipLayerNormalization"}  # fmt: skip
    assert not left & {s.op for s in placement.steps}, placement.text()


def test_concurrent_runs_from_two_threads(be):
    """Two sessions on the one device, run from two threads at once (a server's workers): every
    result equals its single-threaded one and nothing is left behind."""
    import threading

    data = DEMO.read_bytes()
    xs = [RNG.uniform(0, 16, (3, 64)).astype(np.float32) for _ in range(2)]
    sessions = [zg.InferenceSession(data, providers=PROVIDERS) for _ in range(2)]
    want = [s.run(None, {"image": x}) for s, x in zip(sessions, xs, strict=True)]
    start = threading.Barrier(2)
    bad: list[str] = []

    def work(k: int) -> None:
        start.wait()
        for _ in range(25):
            got = sessions[k].run(None, {"image": xs[k]})
            if any(not np.array_equal(g, w) for g, w in zip(got, want[k], strict=True)):
                bad.append(f"thread {k}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    owners = [s._compiled.owner for s in sessions]
    for s in sessions:
        s.close()
    assert not bad, bad
    assert all(be.pool.outstanding(o) == [] for o in owners)
