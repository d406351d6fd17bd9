"""``precision="bf16"`` on whole models, against onnxruntime in fp32 on the same inputs.

bf16 runs the GEMMs and convolutions whose weights are packed (every constant weight of at least
``pack_weights.MIN_ELEMENTS`` elements) with both operands rounded to bfloat16 and float32
accumulation; everything else stays float32. The tolerance follows docs/architecture.md §7 with
bf16's unit roundoff u = 2^-8 in place of float32's:

* one dot product of random-sign terms whose two factors are each rounded (relative error
  uniform in [-u, u], standard deviation u/sqrt(3) each, sqrt(2)·u/sqrt(3) ≈ 0.82u per product)
  has a relative RMS error of about 0.82u, whatever its length: the terms' errors add like a random
  walk, and so does the sum itself;
* a chain of L such layers that neither amplifies nor damps errors adds them in quadrature:
  relative RMS ≈ 0.82u·sqrt(L) of the output.

The bound is C·u·sqrt(L) with C = 2 (2.4x above that estimate; measured on these models: 0.08-0.37
of the bound; the residual net's errors grow slower than sqrt(L)). bf16 cannot see errors below u (a kernel off by 0.1 % passes here): the fp32 tests
catch those. It catches what bf16 code can get wrong — a transposed or misplaced packed weight, a
dropped bias or scale, a wrong layout — which move the output by O(1). Each test also checks that
bf16 really ran (the result differs from fp32 by more than float32 rounding), so it cannot pass
vacuously by falling back to fp32.
"""

from __future__ import annotations

import glob
import math
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import ziggurat as zg
from tests.conformance import test_light_zoo as zoo

from . import builders

U_BF16 = 2.0**-8
C = 2.0
EPS32 = float(np.finfo(np.float32).eps)


def _bf16_or_skip() -> None:
    from ziggurat.backends.cpu import gemm

    try:
        gemm.require_bf16()
    except zg.ZigguratError as exc:
        pytest.skip(f"this CPU cannot run precision='bf16': {exc}")


def _rel_rms(got: np.ndarray, ref: np.ndarray) -> float:
    d = got.astype(np.float64) - ref.astype(np.float64)
    return float(np.linalg.norm(d) / np.linalg.norm(ref.astype(np.float64)))


def _check(data: bytes, feeds: dict, layers: int, output: int = -1) -> float:
    """Run bf16 and fp32 Ziggurat and fp32 onnxruntime; assert the bound; return the error."""
    _bf16_or_skip()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    ref = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, feeds)
    opts = zg.SessionOptions()
    opts.precision = "bf16"
    got = zg.InferenceSession(data, opts).run(None, feeds)
    fp32 = zg.InferenceSession(data).run(None, feeds)
    g, r = got[output], ref[output]
    assert g.shape == r.shape and g.dtype == r.dtype
    err = _rel_rms(g, r)
    bound = C * U_BF16 * math.sqrt(layers)
    assert err <= bound, f"bf16 relative RMS error {err:.2e} > {bound:.2e} ({layers} layers)"
    assert _rel_rms(g, fp32[output]) > 10 * EPS32, "bf16 gave fp32's result: nothing ran in bf16"
    return err


def test_transformer_block_bf16():
    """A BERT-style layer wide enough (hidden 512) for its weights to be packed: Q/K/V, scores,
    context, output projection and two feed-forward GEMMs in one chain: L = 6."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 16, 512)).astype(np.float32)
    mask = np.ones((2, 16), np.int64)
    mask[1, 8:] = 0
    model = builders.transformer_block(hidden=512, heads=8)
    _check(model.SerializeToString(), {"x": x, "mask": mask}, layers=6)
    # The accuracy goal for bf16 BERT: output cosine >= 0.999 against fp32.
    opts = zg.SessionOptions()
    opts.precision = "bf16"
    got = zg.InferenceSession(model.SerializeToString(), opts).run(None, {"x": x, "mask": mask})
    ref = zg.InferenceSession(model.SerializeToString()).run(None, {"x": x, "mask": mask})
    a, b = got[0].ravel().astype(np.float64), ref[0].ravel().astype(np.float64)
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) >= 0.999


# Three of the light zoo architectures with seeded random weights (tests/conformance): a deep
# residual net, a plain deep stack and one with 1x1 "fire" modules; L counts Conv/Gemm layers on
# the longest path.
ZOO = {"resnet50": 50, "vgg19": 19, "squeezenet": 18}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_light_zoo_bf16(name):
    (path,) = [p for p in zoo.LIGHT if os.path.basename(p) == f"light_{name}.onnx"]
    model, _ = zoo.with_logits(zoo.randomize(onnx.load(path), seed=0))
    data = model.SerializeToString()
    rng = np.random.default_rng(1)
    feeds = {}
    for arg in zg.InferenceSession(data).get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in arg.shape]
        feeds[arg.name] = rng.standard_normal(shape).astype(np.float32)
    _check(data, feeds, layers=ZOO[name])


def test_zoo_names_exist():
    names = {os.path.basename(p) for p in glob.glob(os.path.join(zoo.DATA, "light_*.onnx"))}
    assert {f"light_{n}.onnx" for n in ZOO} <= names


def test_onnxruntime_optimized_bert_bf16(monkeypatch):
    """The classic BERT export after onnxruntime's transformers optimizer (EmbedLayerNormalization,
    contrib Attention, SkipLayerNormalization, BiasGelu), hidden 512 so that every weight is packed:
    passes/contrib_canon.py rewrites the contrib ops onto the bf16 kernels. Two layers of
    Q/K/V, scores, context, output projection and two feed-forward GEMMs: L = 12."""
    import logging

    from onnxruntime.transformers.optimizer import optimize_model

    import tests.ops._mini_bert as mb

    for name, value in (("HIDDEN", 512), ("HEADS", 8), ("LAYERS", 2)):
        monkeypatch.setattr(mb, name, value)
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    model = optimize_model(mb.mini_bert(seq=16), model_type="bert", num_heads=8, hidden_size=512,
                           opt_level=0).model  # fmt: skip
    assert {"Attention", "BiasGelu", "SkipLayerNormalization"} <= {
        n.op_type for n in model.graph.node
    }
    rng = np.random.default_rng(4)
    feeds = {
        "input_ids": rng.integers(0, mb.VOCAB, (2, 16)).astype(np.int64),
        "token_type_ids": rng.integers(0, 2, (2, 16)).astype(np.int64),
        "attention_mask": np.array([[1] * 16, [1] * 9 + [0] * 7], np.int64),
    }
    names = {i.name for i in model.graph.input}
    _check(model.SerializeToString(), {k: v for k, v in feeds.items() if k in names}, layers=12)
