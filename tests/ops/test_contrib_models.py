"""Whole models rewritten by onnxruntime's tools into com.microsoft ops, run by Ziggurat and by
onnxruntime on the same file: the transformers optimizer (bert / gpt2 / vit), the offline graph
optimizer (ORT_ENABLE_EXTENDED + optimized_model_filepath), MatMulNBitsQuantizer (4-bit, block 32),
quantize_dynamic and quantize_static.

Tolerances are the issue's acceptance bounds: 1e-3 of the output's scale for float models, 2e-2
for quantized ones (one quantization step of an activation, at a rounding tie, may land on the
other side in one engine and propagate). Measured here, the engines agree far closer (float
models to ~1e-6 of scale, quantized ones exactly or within one step); a missing bias, mask or
wrong layout moves the outputs by the order of their scale.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import ziggurat as zg
from tests.models import builders

BENCH = Path(__file__).resolve().parents[2] / "bench-models"
_RNG = np.random.default_rng(0)
_X = _RNG.standard_normal((2, 7, 64)).astype(np.float32)
_MASK = np.array([[1] * 7, [1] * 5 + [0] * 2], np.int64)
_BLOCK_FEEDS = {"x": _X, "mask": _MASK}


def _ms_ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node if n.domain == "com.microsoft")


def _compare(path_or_bytes, feeds, rel: float):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1  # e.g. DynamicQuantizeLSTM's results depend on its thread count
    ref = ort.InferenceSession(path_or_bytes, so, providers=["CPUExecutionProvider"]).run(
        None, feeds
    )
    got = zg.InferenceSession(path_or_bytes).run(None, feeds)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape and g.dtype == r.dtype
        scale = float(np.abs(r).max()) if r.size else 0.0
        err = float(np.abs(g.astype(np.float64) - r).max()) if r.size else 0.0
        assert err <= rel * scale, f"max error {err:.3g} > {rel} x scale {scale:.3g}"


def _bench(name: str) -> Path:
    p = BENCH / name
    if not p.exists():
        pytest.skip(f"{p} is absent (benchmark models are exported locally, not committed)")
    return p


def _offline(src, tmp_path: Path, name: str) -> Path:
    """onnxruntime's offline optimization at ORT_ENABLE_EXTENDED, saved to a file."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    out = tmp_path / f"{name}.ext.onnx"
    so.optimized_model_filepath = str(out)
    data = str(src) if isinstance(src, Path) else src.SerializeToString()
    ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return out


@pytest.mark.parametrize("model_type", ["bert", "gpt2", "vit"])
def test_transformers_optimizer_on_block(model_type):
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    # opt_level=0: the Python fusions only (a higher level first runs onnxruntime, needing torch)
    opt = optimize_model(
        builders.transformer_block(), model_type=model_type, num_heads=4, hidden_size=64,
        opt_level=0,
    ).model  # fmt: skip
    ops = _ms_ops(opt)
    assert ops["SkipLayerNormalization"] == 2 and ops["BiasGelu"] == 1, ops
    _compare(opt.SerializeToString(), _BLOCK_FEEDS, 1e-3)


def test_transformers_optimizer_on_bert_tiny():
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    opt = optimize_model(str(_bench("bert-tiny.onnx")), model_type="bert", num_heads=2,
                         hidden_size=128, opt_level=0).model  # fmt: skip
    assert _ms_ops(opt)["SkipLayerNormalization"] >= 2
    ids = _RNG.integers(0, 1000, (2, 16)).astype(np.int64)
    mask = np.ones((2, 16), np.int64)
    mask[1, 11:] = 0
    _compare(opt.SerializeToString(), {"input_ids": ids, "attention_mask": mask}, 1e-3)


_FEEDS = {
    "mlp": {"x": _RNG.standard_normal((3, 784)).astype(np.float32)},
    "small_cnn": {"x": _RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)},
    "transformer_block": _BLOCK_FEEDS,
}
_EXPECT = {"mlp": "FusedGemm", "small_cnn": "FusedConv", "transformer_block": "FusedMatMul"}


@pytest.mark.parametrize("name", list(_FEEDS))
def test_offline_extended_optimization(name, tmp_path):
    path = _offline(getattr(builders, name)(), tmp_path, name)
    assert _ms_ops(onnx.load(path))[_EXPECT[name]] >= 1
    _compare(str(path), _FEEDS[name], 1e-3)


@pytest.mark.parametrize("name", ["bert-tiny.onnx", "mobilenetv2.onnx"])
def test_offline_extended_optimization_bench_models(name, tmp_path):
    path = _offline(_bench(name), tmp_path, name)
    model = onnx.load(path)
    assert _ms_ops(model), "expected com.microsoft fusions"
    if name.startswith("bert"):
        feeds = {"input_ids": _RNG.integers(0, 1000, (2, 16)).astype(np.int64),
                 "attention_mask": np.ones((2, 16), np.int64)}  # fmt: skip
    else:
        feeds = {
            model.graph.input[0].name: _RNG.standard_normal((1, 3, 224, 224)).astype(np.float32)
        }
    _compare(str(path), feeds, 1e-3)


def test_matmul_nbits_quantizer_block32(tmp_path):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    for symmetric in (True, False):
        q = MatMulNBitsQuantizer(
            builders.transformer_block(), block_size=32, is_symmetric=symmetric
        )
        q.process()
        model = q.model.model
        assert _ms_ops(model)["MatMulNBits"] == 6
        _compare(model.SerializeToString(), _BLOCK_FEEDS, 2e-2)


@pytest.mark.parametrize("name", ["mlp", "transformer_block"])
def test_quantize_dynamic_then_offline(name, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = tmp_path / f"{name}.onnx"
    onnx.save(getattr(builders, name)(), src)
    q = tmp_path / f"{name}.int8.onnx"
    quantize_dynamic(src, q, weight_type=QuantType.QInt8)
    _compare(str(q), _FEEDS[name], 2e-2)
    ext = _offline(
        q, tmp_path, f"{name}.int8"
    )  # fuses into DynamicQuantizeMatMul / MatMulIntegerToFloat
    assert _ms_ops(onnx.load(ext))["DynamicQuantizeMatMul"] >= 1
    _compare(str(ext), _FEEDS[name], 2e-2)


@pytest.mark.parametrize("fmt", ["QOperator", "QDQ"])
def test_quantize_static_cnn(fmt, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    rng = np.random.default_rng(1)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(
                [{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
            )

        def get_next(self):
            return next(self._it, None)

    src = tmp_path / "cnn.onnx"
    onnx.save(builders.small_cnn(), src)
    q = tmp_path / "cnn.q.onnx"
    quantize_static(src, q, Reader(), quant_format=getattr(QuantFormat, fmt))
    feeds = {"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}
    _compare(str(q), feeds, 2e-2)
    ext = _offline(q, tmp_path, "cnn.q")
    ops = _ms_ops(onnx.load(ext))
    assert ops["QGemm"] == 1 and ops["QLinearGlobalAveragePool"] == 1, ops
    _compare(str(ext), feeds, 2e-2)


def test_quantize_dynamic_lstm_model(tmp_path):
    """quantize_dynamic turns an LSTM into DynamicQuantizeLSTM (int8 weights, transposed)."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(2)
    i, h = 8, 16
    inits = [
        numpy_helper.from_array((rng.standard_normal((2, 4 * h, i)) * 0.3).astype(np.float32), "W"),
        numpy_helper.from_array((rng.standard_normal((2, 4 * h, h)) * 0.3).astype(np.float32), "R"),
        numpy_helper.from_array((rng.standard_normal((2, 8 * h)) * 0.1).astype(np.float32), "B"),
    ]
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "yh", "yc"], hidden_size=h,
                            direction="bidirectional")  # fmt: skip
    graph = helper.make_graph(
        [node], "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 2, i])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "yh", "yc")],
        inits,
    )  # fmt: skip
    src, q = tmp_path / "lstm.onnx", tmp_path / "lstm.int8.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), src)
    quantize_dynamic(src, q, weight_type=QuantType.QInt8)
    assert _ms_ops(onnx.load(q))["DynamicQuantizeLSTM"] == 1
    _compare(str(q), {"x": rng.standard_normal((6, 2, i)).astype(np.float32)}, 2e-2)


def _mini_bert_feeds():
    from tests.ops._mini_bert import VOCAB

    rng = np.random.default_rng(3)
    return {
        "input_ids": rng.integers(0, VOCAB, (2, 8)).astype(np.int64),
        "token_type_ids": rng.integers(0, 2, (2, 8)).astype(np.int64),
        "attention_mask": np.array([[1] * 8, [1] * 5 + [0] * 3], np.int64),
    }


@pytest.mark.parametrize("model_type", ["bert", "vit"])
def test_transformers_optimizer_fuses_a_classic_bert(model_type):
    """The classic BERT export fuses into EmbedLayerNormalization, Attention (with its mask for
    bert; vit's fusion drops the mask input), SkipLayerNormalization and BiasGelu."""
    from onnxruntime.transformers.optimizer import optimize_model

    from tests.ops._mini_bert import HEADS, HIDDEN, mini_bert

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    opt = optimize_model(mini_bert(), model_type=model_type, num_heads=HEADS,
                         hidden_size=HIDDEN, opt_level=0).model  # fmt: skip
    ops = _ms_ops(opt)
    assert ops["EmbedLayerNormalization"] == 1 and ops["Attention"] == 2, ops
    assert ops["SkipLayerNormalization"] == 4 and ops["BiasGelu"] == 2, ops
    names = {i.name for i in opt.graph.input}
    feeds = {k: v for k, v in _mini_bert_feeds().items() if k in names}
    _compare(opt.SerializeToString(), feeds, 1e-3)


def test_offline_extended_optimization_of_a_classic_bert(tmp_path):
    from tests.ops._mini_bert import mini_bert

    path = _offline(mini_bert(), tmp_path, "mini_bert")
    assert _ms_ops(onnx.load(path)), "expected com.microsoft fusions"
    _compare(str(path), _mini_bert_feeds(), 1e-3)
