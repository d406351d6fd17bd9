"""``enable_quantization`` per model: a model's config.toml overrides the server's setting, and
the server's session factory then builds an int8 session (QDense nodes, int8 weights)."""

from __future__ import annotations

import numpy as np

from tests.models import builders
from ziggurat.config import Config, ModelConfig
from ziggurat.server.model import ziggurat_session


def test_per_model_setting_overrides_the_server(tmp_path):
    (tmp_path / "config.toml").write_text("enable_quantization = true\n")
    on = ModelConfig.read(tmp_path / "config.toml")
    assert on.resolve(Config())["enable_quantization"] is True
    assert ModelConfig().resolve(Config(enable_quantization=True))["enable_quantization"] is True
    assert ModelConfig().resolve(Config())["enable_quantization"] is False
    (tmp_path / "config.toml").write_text("enable_quantization = false\n")
    off = ModelConfig.read(tmp_path / "config.toml")
    assert off.resolve(Config(enable_quantization=True))["enable_quantization"] is False


def test_server_session_is_quantized(tmp_path):
    path = tmp_path / "block.onnx"
    path.write_bytes(builders.transformer_block().SerializeToString())
    settings = ModelConfig(enable_quantization=True).resolve(Config())
    sess = ziggurat_session(str(path), settings)
    graph = sess._compiled.graph
    qdense = [n for n in graph.nodes if n.op_type in ("QDense", "DynamicQDense")]
    assert len(qdense) >= 4
    assert all(graph.initializers[n.inputs[1]].dtype == np.int8 for n in qdense)
