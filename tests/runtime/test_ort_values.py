"""OrtValue, RunOptions, run_with_ort_values, run_async, sparse tensors, OrtDevice and the
allocator classes: each call made on Ziggurat and on onnxruntime, the answers compared."""

from __future__ import annotations

import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import ziggurat as zg
from ziggurat.capi import onnxruntime_pybind11_state as C


def _mul_model() -> bytes:
    """Y = X * W with W = [[1,2],[3,4],[5,6]] (onnxruntime's mul_1 test model, rebuilt)."""
    w = helper.make_tensor("W", TensorProto.FLOAT, [3, 2], [1, 2, 3, 4, 5, 6])
    g = helper.make_graph(
        [helper.make_node("Mul", ["X", "W"], ["Y"])], "mul",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [3, 2])], [w],
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


@pytest.fixture(scope="module")
def model() -> bytes:
    return _mul_model()


@pytest.fixture(scope="module")
def sessions(model):
    return zg.InferenceSession(model), ort.InferenceSession(
        model, providers=["CPUExecutionProvider"]
    )


X = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=np.float32)


def test_ortvalue_from_numpy_matches_onnxruntime():
    a, b = X.copy(), X.copy()
    zv, ov = zg.OrtValue.ortvalue_from_numpy(a), ort.OrtValue.ortvalue_from_numpy(b)
    for call in ("shape", "data_type", "element_type", "is_tensor", "device_name",
                 "tensor_size_in_bytes", "has_value", "is_tensor_sequence", "is_sparse_tensor"):  # fmt: skip
        assert getattr(zv, call)() == getattr(ov, call)(), call
    # Both share the array's memory: writes through the array show in numpy(), and back.
    a[0, 0] = b[0, 0] = 100.0
    assert zv.numpy()[0, 0] == ov.numpy()[0, 0] == 100.0
    zv.numpy()[1, 1] = 7.0
    assert a[1, 1] == 7.0
    zv.update_inplace(np.ones((3, 2), np.float32))
    ov.update_inplace(np.ones((3, 2), np.float32))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(RuntimeError):
        zv.update_inplace(np.ones((3, 3), np.float32))
    with pytest.raises(RuntimeError):
        ov.update_inplace(np.ones((3, 3), np.float32))


@pytest.mark.parametrize("element_type", [np.int64, np.float16, 7, 10, 16])
def test_ortvalue_from_shape_and_type_matches_onnxruntime(element_type):
    zv = zg.OrtValue.ortvalue_from_shape_and_type([2, 3], element_type)
    ov = ort.OrtValue.ortvalue_from_shape_and_type([2, 3], element_type)
    assert (zv.shape(), zv.data_type(), zv.element_type()) == (
        ov.shape(), ov.data_type(), ov.element_type(),
    )  # fmt: skip


def test_ortvalue_with_onnx_type_views_bytes():
    bits = np.array([0x3F80, 0x4000, 0xC040], dtype=np.uint16)  # bfloat16 1, 2, -3
    zv = zg.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, 16)
    ov = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, 16)
    assert zv.data_type() == ov.data_type() == "tensor(bfloat16)"
    assert zv.numpy().astype(np.float32).tolist() == [1.0, 2.0, -3.0]
    with pytest.raises(zg.InputError, match="2-byte elements"):
        zg.OrtValue.ortvalue_from_numpy_with_onnx_type(np.zeros(2, np.float32), 16)


def test_ortvalue_elsewhere_than_cpu_is_refused():
    with pytest.raises(zg.ConfigError, match="CPU memory only"):
        zg.OrtValue.ortvalue_from_numpy(X, "cuda", 0)


def test_run_with_ort_values_matches_onnxruntime(sessions):
    zs, os_ = sessions
    z = zs.run_with_ort_values(["Y"], {"X": zg.OrtValue.ortvalue_from_numpy(X)})
    o = os_.run_with_ort_values(["Y"], {"X": ort.OrtValue.ortvalue_from_numpy(X)})
    assert isinstance(z[0], zg.OrtValue)
    np.testing.assert_array_equal(z[0].numpy(), o[0].numpy())
    # OrtValues are feeds of plain run() too, and the engine-level session takes them.
    np.testing.assert_array_equal(zs.run(None, {"X": zg.OrtValue.ortvalue_from_numpy(X)})[0], X * X)
    vec = zs._sess.run_with_ort_values({"X": z[0]._get_c_value()}, ["Y"], C.RunOptions())
    assert isinstance(vec, C.OrtValueVector)
    np.testing.assert_array_equal(vec[0].numpy(), (X * X) * X)  # W equals X


def test_run_options_match_onnxruntime(sessions):
    zro, oro = zg.RunOptions(), ort.RunOptions()
    for name in ("log_severity_level", "log_verbosity_level", "logid", "terminate",
                 "only_execute_path_to_fetches"):  # fmt: skip
        assert getattr(zro, name) == getattr(oro, name), name
    zro.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    assert zro.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    with pytest.raises(RuntimeError, match="does not have configuration with key: nope"):
        zro.get_run_config_entry("nope")
    with pytest.raises(AttributeError):
        zro.terminat = True  # a typo raises, as onnxruntime's
    zs, os_ = sessions
    zro.terminate = oro.terminate = True
    with pytest.raises(C.Fail, match="terminate flag"):
        zs.run(None, {"X": X}, zro)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.Fail, match="terminate flag"):
        os_.run(None, {"X": X}, oro)
    zro.terminate = False
    np.testing.assert_array_equal(zs.run(None, {"X": X}, zro)[0], X * X)


def test_run_async_calls_back_with_results_or_the_error(sessions):
    zs, _ = sessions
    got: dict[str, tuple] = {}
    done = {k: threading.Event() for k in ("ok", "bad")}

    def callback(results, user_data, err):
        got[user_data] = (results, err)
        done[user_data].set()

    zs.run_async(["Y"], {"X": X}, callback, "ok")
    zs.run_async(["Y"], {"X": X.astype(np.float64)}, callback, "bad")
    assert done["ok"].wait(30) and done["bad"].wait(30)
    results, err = got["ok"]
    assert err == "" and len(results) == 1
    np.testing.assert_array_equal(results[0], X * X)
    results, err = got["bad"]
    assert results == [] and "expects FP32" in err


def test_sparse_coo_and_csr_match_onnxruntime():
    shape, values = [9, 9], np.array([1.0, 2.0, 3.0], np.float32)
    linear = np.array([3, 5, 15], np.int64)
    z = zg.SparseTensor.sparse_coo_from_numpy(shape, values, linear, zg.OrtDevice.make("cpu", 0))
    o = ort.SparseTensor.sparse_coo_from_numpy(shape, values, linear, ort.OrtDevice.make("cpu", 0))
    assert (int(z.format()), z.dense_shape(), z.data_type()) == (
        int(o.format()), o.dense_shape(), o.data_type(),
    )  # fmt: skip
    assert not z.values().flags.writeable and not z.as_coo_view().indices().flags.writeable
    dense = np.zeros(81, np.float32)
    dense[linear] = values
    np.testing.assert_array_equal(z.to_dense(), dense.reshape(9, 9))
    inner, outer = np.array([1, 1, 1], np.int64), np.array([0, 1, 2, 3, 3, 3, 3, 3, 3, 3], np.int64)
    zc = zg.SparseTensor.sparse_csr_from_numpy(
        shape, values, inner, outer, zg.OrtDevice.make("cpu")
    )
    oc = ort.SparseTensor.sparse_csr_from_numpy(
        shape, values, inner, outer, ort.OrtDevice.make("cpu", 0)
    )
    assert int(zc.format()) == int(oc.format()) and zc.data_type() == oc.data_type()
    np.testing.assert_array_equal(zc.as_csrc_view().outer(), oc.as_csrc_view().outer())
    want = np.zeros((9, 9), np.float32)
    want[[0, 1, 2], [1, 1, 1]] = values
    np.testing.assert_array_equal(zc.to_dense(), want)
    with pytest.raises(RuntimeError):
        z.to_cuda(zg.OrtDevice.make("cuda", 0))
    with pytest.raises(zg.InputError, match="out of range"):
        zg.SparseTensor.sparse_coo_from_numpy(
            shape, values, np.array([3, 5, 81]), zg.OrtDevice.make("cpu")
        )
    sv = zg.OrtValue.ort_value_from_sparse_tensor(z)
    assert sv.is_sparse_tensor() and sv.as_sparse_tensor() is z


def test_device_and_allocator_classes_match_onnxruntime():
    zd, od = zg.OrtDevice.make("cpu", 0), ort.OrtDevice.make("cpu", 0)
    assert (zd.device_type(), zd.device_id(), zd.device_mem_type()) == (
        od.device_type(), od.device_id(), od.device_mem_type(),
    )  # fmt: skip
    cfg = {"max_mem": 16, "arena_extend_strategy": 1, "initial_growth_chunk_size_bytes": 2}
    for z, o in ((zg.OrtArenaCfg(8, 0, 4, 2), ort.OrtArenaCfg(8, 0, 4, 2)),
                 (zg.OrtArenaCfg(cfg), ort.OrtArenaCfg(cfg)), (zg.OrtArenaCfg({}), ort.OrtArenaCfg({}))):  # fmt: skip
        for key in ("max_mem", "arena_extend_strategy", "initial_chunk_size_bytes",
                    "max_dead_bytes_per_chunk", "initial_growth_chunk_size_bytes",
                    "max_power_of_two_extend_bytes"):  # fmt: skip
            assert getattr(z, key) == getattr(o, key), key
    with pytest.raises(RuntimeError, match="Invalid OrtArenaCfg option: bogus"):
        zg.OrtArenaCfg({"bogus": 1})
    info = zg.OrtMemoryInfo(
        "Cpu", zg.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, zg.OrtMemType.DEFAULT
    )
    zg.create_and_register_allocator(info, None)
    from ziggurat.runtime.allocators import registered_allocators

    assert info in registered_allocators()
    cuda = zg.OrtMemoryInfo(
        "Cuda", zg.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, zg.OrtMemType.DEFAULT
    )
    with pytest.raises(RuntimeError, match="Only CPU devices"):
        zg.create_and_register_allocator(cuda, None)


def test_string_inputs_as_onnxruntime_takes_them():
    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "ident",
        [helper.make_tensor_value_info("x", TensorProto.STRING, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, [2, 2])],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    zs, os_ = zg.InferenceSession(m), ort.InferenceSession(m, providers=["CPUExecutionProvider"])
    feeds = [
        np.array([b"must", b"have", b"same", b"size"], dtype=np.void).reshape(2, 2),
        np.array(["Olá", "你好", "a", "b"]).reshape(2, 2),
        [["x", "y"], ["z", "w"]],
    ]
    for x in feeds:
        z, o = zs.run(None, {"x": x})[0], os_.run(None, {"x": x})[0]
        assert z.dtype == o.dtype and z.tolist() == o.tolist()


def test_onnx_is_only_the_builder_here():
    assert onnx.__version__  # the models above are built with onnx's helpers


def test_memory_infos_match_onnxruntime(sessions):
    zs, os_ = sessions
    for z, o in ((zs.get_input_memory_infos(), os_.get_input_memory_infos()),
                 (zs.get_output_memory_infos(), os_.get_output_memory_infos())):  # fmt: skip
        assert len(z) == len(o) == 1
        for key in ("name", "device_id", "mem_type", "allocator_type", "device_mem_type",
                    "device_vendor_id"):  # fmt: skip
            assert (
                int(getattr(z[0], key)) == int(getattr(o[0], key))
                if key != "name"
                else (z[0].name == o[0].name)
            ), key
    assert len(zs.get_input_epdevices()) == len(os_.get_input_epdevices()) == 1
    z, o = (
        m.OrtMemoryInfo.create_v2("Test", m.OrtMemoryInfoDeviceType.CPU, 0, 0,
                                  m.OrtDeviceMemoryType.DEFAULT, 128, m.OrtAllocatorType.ORT_ARENA_ALLOCATOR)
        for m in (zg, ort)
    )  # fmt: skip
    assert (z.name, int(z.mem_type), int(z.allocator_type), int(z.device_mem_type)) == (
        o.name, int(o.mem_type), int(o.allocator_type), int(o.device_mem_type),
    )  # fmt: skip
    for name in ("cpu", "cuda"):
        assert (
            zg.OrtDevice.make(name, 0).device_vendor_id()
            == ort.OrtDevice.make(name, 0).device_vendor_id()
        )


def test_ml_dtypes_feeds_are_not_taken_for_void_strings():
    """numpy calls bfloat16/float8/int4 dtypes kind "V" too: only np.void arrays are strings."""
    import ml_dtypes

    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "ident",
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [3])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [3])],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    x = np.array([1.5, -2.0, 3.0], ml_dtypes.bfloat16)
    (y,) = zg.InferenceSession(m).run(None, {"x": zg.OrtValue.ortvalue_from_numpy(x)})
    assert y.dtype == ml_dtypes.bfloat16 and y.tolist() == x.tolist()


def test_io_binding_matches_onnxruntime(sessions):
    zs, os_ = sessions
    got = {}
    for lib, s in ((zg, zs), (ort, os_)):
        b = s.io_binding()
        x = X.copy()
        b.bind_cpu_input("X", x)
        b.bind_output("Y")
        s.run_with_iobinding(b)
        first = b.copy_outputs_to_cpu()[0]
        # An output bound to an OrtValue is written into its memory, run after run.
        out = lib.OrtValue.ortvalue_from_numpy(np.zeros((3, 2), np.float32))
        b.bind_ortvalue_output("Y", out)
        x *= 2  # bound inputs are read when the run starts
        s.run_with_iobinding(b)
        assert b.get_outputs()[0].data_ptr() == out.data_ptr()
        # Inputs bound by address, outputs into a caller's buffer by address.
        y = np.zeros((3, 2), np.float32)
        b.bind_input("X", "cpu", 0, np.float32, [3, 2], X.ctypes.data)
        b.bind_output("Y", "cpu", 0, np.float32, [3, 2], y.ctypes.data)
        s.run_with_iobinding(b)
        got[lib.__name__] = (first, out.numpy().copy(), y.copy())
        b.clear_binding_outputs()
        with pytest.raises(RuntimeError, match="At least one output should be requested"):
            s.run_with_iobinding(b)
    for z, o in zip(got["ziggurat"], got["onnxruntime"]):
        np.testing.assert_array_equal(z, o)
    np.testing.assert_array_equal(got["ziggurat"][1], 2 * X * X)
    b = zs.io_binding()
    b.bind_cpu_input("X", X)
    b.bind_ortvalue_output("Y", zg.OrtValue.ortvalue_from_numpy(np.zeros((2, 3), np.float32)))
    with pytest.raises(zg.InputError, match="bound buffer is float32 \\[2, 3\\]"):
        zs.run_with_iobinding(b)
    with pytest.raises(zg.ConfigError, match="binds CPU memory"):
        b.bind_output("Y", "cuda", 0)


def test_dlpack_round_trip_shares_memory():
    v = zg.OrtValue.ortvalue_from_numpy(X.copy())
    back = zg.OrtValue.from_dlpack(v.to_dlpack())
    assert back.data_ptr() == v.data_ptr() and back.numpy().tolist() == X.tolist()
    assert np.from_dlpack(v).ctypes.data == v.data_ptr()  # consumers take the OrtValue itself
    assert not C.is_dlpack_uint8_tensor(v.to_dlpack())
    flags = np.array([1, 0, 1], np.uint8)
    assert C.is_dlpack_uint8_tensor(flags.__dlpack__())
    as_bool = zg.OrtValue.from_dlpack(flags.__dlpack__(), True)
    assert as_bool.data_type() == "tensor(bool)" and as_bool.numpy().tolist() == [True, False, True]


def test_tuning_results_as_onnxruntime_on_the_cpu(sessions):
    for s in sessions:
        assert s.get_tuning_results() == []
        for ep, why in (("CPUExecutionProvider", "does not support TunableOp"),
                        ("UnknownEP", "Cannot find execution provider UnknownEP")):  # fmt: skip
            entry = [{"ep": ep, "results": {}, "validators": {}}]
            s.set_tuning_results(entry)  # only warns
            with pytest.raises(RuntimeError, match=why):
                s.set_tuning_results(entry, error_on_invalid=True)


def test_run_with_ortvaluevector(sessions):
    zs, _ = sessions
    fetches = C.OrtValueVector()
    zs.run_with_ortvaluevector(
        None, ["X"], [zg.OrtValue.ortvalue_from_numpy(X)], ["Y"], fetches, []
    )
    assert len(fetches) == 1 and fetches[0].numpy().tolist() == (X * X).tolist()
    with pytest.raises(zg.InputError, match="1 feed names but 0 feeds"):
        zs.run_with_ortvaluevector(None, ["X"], [], ["Y"], fetches, [])
