"""SessionOptions and session-level onnxruntime API: config entries, user initializers, free
dimension overrides, the optimized model file, options stored in the model, providers, exception
types. Each behaviour checked against onnxruntime doing the same."""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi import onnxruntime_inference_collection as ort_collection

import ziggurat as zg
from ziggurat.capi import onnxruntime_inference_collection as zg_collection
from ziggurat.capi import onnxruntime_pybind11_state as C

CPU = ["CPUExecutionProvider"]


def _model(
    nodes, inputs, outputs, inits=(), ir_version=8, opset=15, metadata=None
) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    for k, v in (metadata or {}).items():
        m.metadata_props.add(key=k, value=v)
    return m


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _both(model, so_z=None, so_o=None):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return zg.InferenceSession(data, so_z), ort.InferenceSession(data, so_o, providers=CPU)


def test_config_entries_as_onnxruntime():
    for so in (zg.SessionOptions(), ort.SessionOptions()):
        so.add_session_config_entry("CONFIG_KEY", "CONFIG_VAL")
        assert so.get_session_config_entry("CONFIG_KEY") == "CONFIG_VAL"
        with pytest.raises(RuntimeError, match="does not have configuration with key: INVALID"):
            so.get_session_config_entry("INVALID")
    with pytest.raises(zg.ConfigError, match="must be an integer"):
        zg.SessionOptions().add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "ten"
        )
    with pytest.raises(AttributeError):
        zg.SessionOptions().optimized_model_file_path = "x.onnx"  # misspelt: refused


def test_add_initializer_overrides_the_model_one():
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "W")
    m = _model([helper.make_node("Mul", ["X", "W"], ["Y"])], [_vi("X", 1, [3, 2])],
               [_vi("Y", 1, [3, 2])], [w])  # fmt: skip
    new_w = np.array([[2, 1], [4, 3], [6, 5]], np.float32)
    zso, oso = zg.SessionOptions(), ort.SessionOptions()
    zso.add_initializer("W", zg.OrtValue.ortvalue_from_numpy(new_w))
    keep = ort.OrtValue.ortvalue_from_numpy(new_w)  # onnxruntime needs it alive (else: crash)
    oso.add_initializer("W", keep)
    x = np.ones((3, 2), np.float32)
    zs, os_ = _both(m, zso, oso)
    np.testing.assert_array_equal(zs.run(None, {"X": x})[0], os_.run(None, {"X": x})[0])
    np.testing.assert_array_equal(zs.run(None, {"X": x})[0], new_w)
    bad = zg.SessionOptions()
    bad.add_initializer("nope", np.zeros(1, np.float32))
    with pytest.raises(zg.ConfigError, match="no initializer 'nope'"):
        zg.InferenceSession(m.SerializeToString(), bad)


def test_external_initializers_given_by_the_user(tmp_path):
    pads = helper.make_tensor("pads", TensorProto.INT64, [4], [0] * 4)
    pads.ClearField("int64_data")
    pads.data_location = TensorProto.EXTERNAL
    pads.external_data.add(key="location", value="not_on_disk.bin")
    m = _model([helper.make_node("Pad", ["X", "pads"], ["Y"], mode="constant")],
               [_vi("X", 1, [1, 2]), _vi("pads", 7, [4])], [_vi("Y", 1, [1, 4])], [pads])  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    with pytest.raises(zg.ExternalDataError):
        zg.InferenceSession(path)
    value = np.array([0, 0, 1, 1], np.int64)
    zso, oso = zg.SessionOptions(), ort.SessionOptions()
    zso.add_external_initializers(["pads"], [zg.OrtValue.ortvalue_from_numpy(value)])
    keep = ort.OrtValue.ortvalue_from_numpy(value)  # onnxruntime needs it alive
    oso.add_external_initializers(["pads"], [keep])
    x = np.array([[1, 2]], np.float32)
    z = zg.InferenceSession(path, zso).run(None, {"X": x})[0]
    o = ort.InferenceSession(str(path), oso, providers=CPU).run(None, {"X": x})[0]
    np.testing.assert_array_equal(z, o)
    wrong = zg.SessionOptions()
    wrong.add_external_initializers(["pads"], [np.zeros(3, np.int64)])
    with pytest.raises(zg.ModelLoadError, match="model declares int64 \\[4\\]"):
        zg.InferenceSession(path, wrong)


def _abs_free_dims() -> onnx.ModelProto:
    x = _vi("x", 1, ["Dim1", "Dim2", 5])
    x.type.tensor_type.shape.dim[0].denotation = "DATA_BATCH"
    x.type.tensor_type.shape.dim[1].denotation = "DATA_CHANNEL"
    return _model([helper.make_node("Abs", ["x"], ["y"])], [x], [_vi("y", 1, ["Dim1", "Dim2", 5])])


@pytest.mark.parametrize("how", ["name", "denotation"])
def test_free_dimension_overrides(how):
    m = _abs_free_dims()
    zso, oso = zg.SessionOptions(), ort.SessionOptions()
    keys = {"name": ("Dim1", "Dim2"), "denotation": ("DATA_BATCH", "DATA_CHANNEL")}[how]
    for so in (zso, oso):
        add = getattr(so, f"add_free_dimension_override_by_{how}")
        add(keys[0], 3)
        add(keys[1], 4)
    zs, os_ = _both(m, zso, oso)
    assert zs.get_inputs()[0].shape == os_.get_inputs()[0].shape == [3, 4, 5]
    x = -np.ones((3, 4, 5), np.float32)
    np.testing.assert_array_equal(zs.run(None, {"x": x})[0], os_.run(None, {"x": x})[0])
    with pytest.raises(zg.InputError, match="expects dim 0 = 3"):
        zs.run(None, {"x": -np.ones((2, 4, 5), np.float32)})


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    return _model(nodes, [_vi("x", 1, ["n", 8])], [_vi("y", 1, ["n", 4])], [w1, b1, w2])


def _assert_mlp_close(got, want, x, m: onnx.ModelProto) -> None:
    """Two correct float32 evaluations of ``_mlp`` (any BLAS kernel, any summation order) differ
    by at most twice one's rounding bound: n·u·sum|terms| per dot product of n terms (u = 2^-24),
    carried through ReLU (1-Lipschitz) and the second product. Exact equality would hold only
    where both engines happen to sum in the same order (not under OPENBLAS_CORETYPE=Prescott)."""
    p = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    w1, b1, w2 = p["w1"], p["b1"], p["w2"]
    u, x = 2.0**-24, x.astype(np.float64)
    h = np.maximum(x @ w1 + b1, 0)
    e1 = (w1.shape[0] + 1) * u * (np.abs(x) @ np.abs(w1) + np.abs(b1))
    bound = e1 @ np.abs(w2) + w2.shape[0] * u * ((h + e1) @ np.abs(w2))
    diff = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    assert (diff <= 2 * bound).all(), (diff.max(), (2 * bound).min())


def test_optimized_model_file_loads_in_onnxruntime(tmp_path):
    """ORT_ENABLE_BASIC keeps standard ops: the written file runs in onnxruntime too."""
    m = _mlp()
    so = zg.SessionOptions()
    so.graph_optimization_level = zg.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    zs = zg.InferenceSession(m.SerializeToString(), so)
    onnx.checker.check_model(onnx.load(so.optimized_model_filepath))
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    o = ort.InferenceSession(so.optimized_model_filepath, providers=CPU).run(None, {"x": x})[0]
    _assert_mlp_close(zs.run(None, {"x": x})[0], o, x, m)


def test_optimized_model_with_external_initializers(tmp_path):
    m = _mlp()
    so = zg.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "sub" / "opt.onnx")
    os.makedirs(tmp_path / "sub")
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "w.bin")
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "100"
    )
    zs = zg.InferenceSession(m.SerializeToString(), so)
    assert (tmp_path / "sub" / "w.bin").is_file()
    saved = onnx.load(so.optimized_model_filepath, load_external_data=False)
    where = {t.name: t.data_location for t in saved.graph.initializer}
    big = {t.name for t in m.graph.initializer if numpy_helper.to_array(t).nbytes >= 100}
    assert big and all(where[n] == TensorProto.EXTERNAL for n in big if n in where)
    assert all(v == TensorProto.DEFAULT for n, v in where.items() if n not in big)
    # Reloading the written file (the fused graph, external data beside it) gives the same outputs.
    x = np.random.default_rng(2).standard_normal((3, 8)).astype(np.float32)
    again = zg.InferenceSession(so.optimized_model_filepath)
    np.testing.assert_array_equal(again.run(None, {"x": x})[0], zs.run(None, {"x": x})[0])


def test_options_stored_in_the_model(monkeypatch):
    cfg = {"session_options": {"inter_op_num_threads": 5, "intra_op_num_threads": 2,
                               "graph_optimization_level": 1, "enable_profiling": 0}}  # fmt: skip
    m = _mlp()
    m.metadata_props.add(key="ort_config", value=json.dumps(cfg))
    data = m.SerializeToString()
    assert zg.InferenceSession(data).get_session_options().inter_op_num_threads == 0
    monkeypatch.setenv("ORT_LOAD_CONFIG_FROM_MODEL", "1")
    zo = zg.InferenceSession(data).get_session_options()
    oo = ort.InferenceSession(data, providers=CPU).get_session_options()
    for key in (
        "inter_op_num_threads",
        "intra_op_num_threads",
        "enable_profiling",
        "execution_mode",
    ):
        assert getattr(zo, key) == getattr(oo, key), key
    assert int(zo.graph_optimization_level) == int(oo.graph_optimization_level) == 1
    m.metadata_props[0].value = json.dumps({"session_options": {"intra_op_threads": 2}})
    with pytest.raises(zg.ConfigError, match="intra_op_threads, which Ziggurat does not know"):
        zg.InferenceSession(m.SerializeToString())


def test_providers_and_their_options():
    m = _mlp().SerializeToString()
    zs, os_ = _both(m)
    assert zs.get_provider_options() == os_.get_provider_options() == {"CPUExecutionProvider": {}}
    zs.set_providers(["CPUExecutionProvider"])
    assert zs.get_providers() == ["CPUExecutionProvider"]
    x = np.ones((1, 8), np.float32)
    _assert_mlp_close(zs.run(None, {"x": x})[0], os_.run(None, {"x": x})[0], x, _mlp())
    for s in (zs, os_):  # (onnxruntime's session is unusable after this)
        with pytest.warns(UserWarning, match="not in available provider names"):
            with pytest.raises(RuntimeError, match="Unknown Provider Type: InvalidProvider"):
                s.set_providers(["InvalidProvider"])


@pytest.mark.parametrize(
    "providers, options",
    [(None, None), (["a"], None), ([("a", {1: 2}), "b"], None), (["a", "b"], [{1: 2}, {}]),
     (["a", "b", "a"], [{"x": 1}, {}, {"y": 2}]), (3, None), ([3], None), (["a"], 3),
     (["a"], ["not dict"]), (["a", "b"], [{1: 2}]), ([("a", {1: 2})], [{3: 4}])],
)  # fmt: skip
def test_provider_args_normalized_as_onnxruntime(providers, options):
    def call(fn):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            try:
                return fn(providers, options, ["a", "b", "c"]), [x.category for x in w]
            except ValueError:
                return "ValueError", []

    z = call(zg_collection.check_and_normalize_provider_args)
    o = call(ort_collection.check_and_normalize_provider_args)
    assert z == o


def test_exception_types_are_onnxruntime_s(tmp_path):
    with pytest.raises(C.NoSuchFile):
        zg.InferenceSession(tmp_path / "missing.onnx")
    with pytest.raises(C.InvalidProtobuf):
        zg.InferenceSession(b"not a model")
    zs = zg.InferenceSession(_mlp().SerializeToString())
    with pytest.raises(C.InvalidArgument):
        zs.run(None, {"x": np.ones((1, 8), np.float64)})
    with pytest.raises(ValueError, match=r"Required inputs \(\['x'\]\) are missing"):
        zs.run(None, {})
    assert (
        issubclass(zg.UnsupportedOpError, C.NotImplemented)
        and C.NotImplemented.__name__ == "NotImplemented"
    )
    assert issubclass(zg.GraphError, C.InvalidGraph)
    assert issubclass(zg.ExecutionError, C.Fail)


def test_profiling_start_time_and_module_functions():
    so = zg.SessionOptions()
    so.enable_profiling = True
    before = time.time_ns()
    s = zg.InferenceSession(_mlp().SerializeToString(), so)
    assert before <= s.get_profiling_start_time_ns() <= time.time_ns()
    os.remove(s.end_profiling())
    assert zg.InferenceSession(_mlp().SerializeToString()).get_profiling_start_time_ns() == 0
    assert "Build Info" in zg.get_build_info() and "Build Info" in ort.get_build_info()
    assert zg.enable_telemetry_events() is None and zg.disable_telemetry_events() is None
    assert (
        C.get_default_session_options().graph_optimization_level
        == zg.GraphOptimizationLevel.ORT_ENABLE_ALL
    )


def test_external_files_given_in_memory(tmp_path):
    pads = helper.make_tensor("pads", TensorProto.INT64, [4], [0] * 4)
    pads.ClearField("int64_data")
    pads.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "pads.bin"), ("offset", "8"), ("length", "32")):
        pads.external_data.add(key=k, value=v)
    m = _model([helper.make_node("Pad", ["X", "pads"], ["Y"], mode="constant")],
               [_vi("X", 1, [1, 2]), _vi("pads", 7, [4])], [_vi("Y", 1, [1, 4])], [pads])  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    content = b"\xff" * 8 + np.array([0, 1, 0, 1], np.int64).tobytes() + b"tail"
    zso, oso = zg.SessionOptions(), ort.SessionOptions()
    zso.add_external_initializers_from_files_in_memory(["pads.bin"], [content], [len(content)])
    oso.add_external_initializers_from_files_in_memory(["pads.bin"], [content], [len(content)])
    x = np.array([[1, 2]], np.float32)
    z = zg.InferenceSession(path, zso).run(None, {"X": x})[0]
    o = ort.InferenceSession(str(path), oso, providers=CPU).run(None, {"X": x})[0]
    np.testing.assert_array_equal(z, o)
    np.testing.assert_array_equal(z, [[0, 1, 2, 0]])  # pads: begins (0, 1), ends (0, 1)
    # From bytes too (no folder to find files in: only the in-memory one can serve).
    np.testing.assert_array_equal(
        zg.InferenceSession(m.SerializeToString(), zso).run(None, {"X": x})[0], z
    )
    short = zg.SessionOptions()
    short.add_external_initializers_from_files_in_memory(["pads.bin"], [content], [20])
    with pytest.raises(zg.ExternalDataError, match="too short"):
        zg.InferenceSession(path, short)


def test_onnxruntime_option_fields_are_accepted_with_its_defaults():
    z, o = zg.SessionOptions(), ort.SessionOptions()
    for name in ("enable_cpu_mem_arena", "enable_mem_pattern", "enable_mem_reuse",
                 "use_deterministic_compute", "use_per_session_threads", "log_verbosity_level",
                 "logid", "optimized_model_filepath", "graph_optimization_level",
                 "execution_mode", "enable_profiling", "inter_op_num_threads"):  # fmt: skip
        assert getattr(z, name) == getattr(o, name), name
    assert int(z.execution_order) == int(o.execution_order) == 0
    z.enable_mem_pattern = False  # code written for onnxruntime sets these
    z.execution_order = zg.ExecutionOrder.PRIORITY_BASED
    m = _mlp().SerializeToString()
    x = np.ones((2, 8), np.float32)
    np.testing.assert_array_equal(zg.InferenceSession(m, z).run(None, {"x": x})[0],
                                  zg.InferenceSession(m).run(None, {"x": x})[0])  # fmt: skip
    with pytest.raises(C.NotImplemented, match="custom-op libraries"):
        z.register_custom_ops_library("libcustom_op_library.so")


def test_default_logger_severity():
    import logging

    logger = logging.getLogger("ziggurat")
    before = logger.level
    try:
        zg.set_default_logger_severity(3)
        assert logger.level == logging.ERROR
        zg.set_default_logger_severity(0)
        assert logger.level == logging.DEBUG
        for lib in (zg, ort):  # both refuse 5 with a RuntimeError
            with pytest.raises(RuntimeError):
                lib.set_default_logger_severity(5)
        zg.set_default_logger_verbosity(1)
    finally:
        logger.setLevel(before)
        ort.set_default_logger_severity(2)


def test_optimized_model_in_ort_format_is_refused(tmp_path):
    so = zg.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "m.ort")
    with pytest.raises(zg.ConfigError, match="ONNX files only"):
        zg.InferenceSession(_mlp().SerializeToString(), so)
    so.optimized_model_filepath = str(tmp_path / "m.onnx")
    so.add_session_config_entry("session.save_model_format", "ORT")
    with pytest.raises(zg.ConfigError, match="ONNX files only"):
        zg.InferenceSession(_mlp().SerializeToString(), so)
    assert not os.path.exists(so.optimized_model_filepath)


def test_logger_callback_receives_records(capsys):
    import logging

    logger = logging.getLogger("ziggurat")
    before = logger.level
    records = []
    try:
        so = zg.SessionOptions()
        so.logid = "mine"
        zg.set_default_logger_callback(lambda *r: records.append(r), severity=1)
        zg.InferenceSession(_mlp().SerializeToString(), so)
        assert any(r[0] == 1 and r[2] == "mine" and "session for model" in r[4] for r in records)
        assert all(isinstance(x, int if i == 0 else str) for r in records for i, x in enumerate(r))
        for bad in (5, -1):
            with pytest.raises(RuntimeError):
                zg.set_default_logger_callback(print, severity=bad)
        with pytest.raises(RuntimeError):
            zg.set_default_logger_callback("not a callable")

        def raising(*_):
            raise ValueError("from the callback")

        zg.set_default_logger_callback(raising, severity=0)
        zg.InferenceSession(_mlp().SerializeToString())  # logs; the error is reported
        assert "from the callback" in capsys.readouterr().err
        zg.set_default_logger_callback(None)
        count = len(records)
        zg.InferenceSession(_mlp().SerializeToString())
        assert len(records) == count  # detached
    finally:
        zg.set_default_logger_callback(None)
        logger.setLevel(before)


def test_free_dimension_override_by_denotation_from_a_file(tmp_path):
    path = tmp_path / "abs.onnx"
    onnx.save(_abs_free_dims(), path)
    zso, oso = zg.SessionOptions(), ort.SessionOptions()
    for so in (zso, oso):
        so.add_free_dimension_override_by_denotation("DATA_CHANNEL", 7)
    z = zg.InferenceSession(path, zso).get_inputs()[0].shape
    assert z == ort.InferenceSession(str(path), oso, providers=CPU).get_inputs()[0].shape
    assert z == ["Dim1", 7, 5]
