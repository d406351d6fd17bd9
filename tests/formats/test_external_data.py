"""External tensor data: read relative to the model, mapped not copied, never outside its folder."""

from __future__ import annotations

import mmap
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from ziggurat.errors import ExternalDataError, ModelLoadError
from ziggurat.formats.onnx import load_model

from .onnx_compare import assert_same_model


def _weights_model() -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(np.arange(1 << 18, dtype=np.float32).reshape(512, 512), "big"),
        numpy_helper.from_array(np.arange(300, dtype=np.int64), "mid"),
        numpy_helper.from_array(np.float32([1, 2]), "tiny"),
    ]
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "big"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TP.FLOAT, ["n", 512])],
        [helper.make_tensor_value_info("y", TP.FLOAT, ["n", 512])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def _backing(arr):
    while isinstance(arr, np.ndarray) and arr.base is not None:
        arr = arr.base
    if isinstance(arr, memoryview):
        arr = arr.obj
    return arr if isinstance(arr, mmap.mmap) else None


@pytest.mark.parametrize("one_file", [True, False])
def test_saved_with_external_data_matches_onnx(tmp_path, one_file):
    path = tmp_path / "model.onnx"
    onnx.save_model(
        _weights_model(), path, save_as_external_data=True, all_tensors_to_one_file=one_file,
        location="weights.bin", size_threshold=0,
    )  # fmt: skip
    m = load_model(path)
    assert_same_model(m, onnx.load(path))
    big = m.graph.initializers["big"]
    assert not big.flags.writeable and big.flags.aligned
    assert big[3, 5] == 3 * 512 + 5
    if one_file:  # onnx aligns big tensors in the shared file, so they are views on its map
        assert _backing(big) is not None


def _external_tensor(name: str, location: str, offset: int | None, length: int | None):
    t = onnx.TensorProto(name=name, data_type=TP.FLOAT, dims=[4])
    t.data_location = TP.EXTERNAL
    entries = {"location": location}
    if offset is not None:
        entries["offset"] = str(offset)
    if length is not None:
        entries["length"] = str(length)
    for k, v in entries.items():
        t.external_data.add(key=k, value=v)
    return t


def _save_with(tmp_path, tensor, name="model.onnx"):
    g = helper.make_graph(
        [], "g", [], [helper.make_tensor_value_info(tensor.name, TP.FLOAT, [4])], [tensor]
    )
    mp = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    path = tmp_path / name
    path.write_bytes(mp.SerializeToString())
    return path, mp


def test_offset_and_length_and_missing_length(tmp_path):
    data = np.float32([9, 8, 7, 6, 1, 2, 3, 4])
    (tmp_path / "w.bin").write_bytes(data.tobytes())
    path, _ = _save_with(tmp_path, _external_tensor("w", "w.bin", 16, 16))
    assert load_model(path).graph.initializers["w"].tolist() == [1, 2, 3, 4]
    path, _ = _save_with(tmp_path, _external_tensor("w", "w.bin", 16, None))  # to end of file
    assert load_model(path).graph.initializers["w"].tolist() == [1, 2, 3, 4]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "v.bin").write_bytes(data[:4].tobytes())
    path, _ = _save_with(tmp_path, _external_tensor("w", "sub/v.bin", None, None))
    assert load_model(path).graph.initializers["w"].tolist() == [9, 8, 7, 6]


def test_tensors_in_one_file_share_one_map(tmp_path):
    path = tmp_path / "model.onnx"
    mp = _weights_model()
    mp.graph.initializer.append(numpy_helper.from_array(np.ones((512, 512), np.float32), "big2"))
    onnx.save_model(mp, path, save_as_external_data=True, location="w.bin", size_threshold=0)
    inits = load_model(path).graph.initializers
    maps = {id(_backing(inits[n])) for n in ("big", "big2")}
    assert len(maps) == 1 and None not in {_backing(inits["big"])}


def test_bytes_source_with_external_data_says_a_path_is_needed(tmp_path):
    path, mp = _save_with(tmp_path, _external_tensor("w", "w.bin", 0, 16))
    with pytest.raises(ExternalDataError, match="as bytes.*path"):
        load_model(mp.SerializeToString())


@pytest.mark.parametrize("location", ["../secret.bin", "sub/../../secret.bin"])
def test_relative_escape_is_refused(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(b"\x01" * 16)
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    path, _ = _save_with(model_dir, _external_tensor("w", location, 0, 16))
    with pytest.raises(ExternalDataError, match="outside the model's folder") as e:
        load_model(path)
    assert "'w'" in str(e.value) and location in str(e.value)


def test_absolute_location_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x01" * 16)
    (tmp_path / "m").mkdir()
    path, _ = _save_with(tmp_path / "m", _external_tensor("w", str(secret), 0, 16))
    with pytest.raises(ExternalDataError, match="absolute"):
        load_model(path)


def test_symlink_pointing_outside_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\x01" * 16)
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    os.symlink(tmp_path / "secret.bin", model_dir / "w.bin")
    path, _ = _save_with(model_dir, _external_tensor("w", "w.bin", 0, 16))
    with pytest.raises(ExternalDataError, match="outside"):
        load_model(path)
    # a symlinked folder holding the model is fine: containment is checked after resolving both
    os.symlink(model_dir, tmp_path / "alias")
    (model_dir / "w.bin").unlink()
    (model_dir / "w.bin").write_bytes(np.float32([1, 2, 3, 4]).tobytes())
    assert load_model(tmp_path / "alias" / "model.onnx").graph.initializers["w"].tolist() == [
        1, 2, 3, 4,
    ]  # fmt: skip


def test_missing_and_short_files(tmp_path):
    path, _ = _save_with(tmp_path, _external_tensor("w", "nope.bin", 0, 16))
    with pytest.raises(ExternalDataError, match="does not exist"):
        load_model(path)
    (tmp_path / "short.bin").write_bytes(b"\0" * 8)
    path, _ = _save_with(tmp_path, _external_tensor("w", "short.bin", 0, 16))
    with pytest.raises(ExternalDataError, match="too short"):
        load_model(path)
    path, _ = _save_with(tmp_path, _external_tensor("w", "short.bin", 4, 4))
    with pytest.raises(ModelLoadError, match="16 bytes"):  # 4 floats need 16 bytes
        load_model(path)
    (tmp_path / "empty.bin").write_bytes(b"")
    path, _ = _save_with(tmp_path, _external_tensor("w", "empty.bin", 0, 16))
    with pytest.raises(ExternalDataError, match="too short"):
        load_model(path)


def test_bad_offset_and_missing_location(tmp_path):
    t = _external_tensor("w", "w.bin", None, None)
    t.external_data.add(key="offset", value="abc")
    path, _ = _save_with(tmp_path, t)
    (tmp_path / "w.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ExternalDataError, match="not integers"):
        load_model(path)
    t = _external_tensor("w", "", 0, 16)
    path, _ = _save_with(tmp_path, t)
    with pytest.raises(ExternalDataError, match="no 'location'"):
        load_model(path)


def test_max_size_counts_external_data(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save_model(_weights_model(), path, save_as_external_data=True, location="w.bin")
    small = os.path.getsize(path)
    assert small < 10_000
    load_model(path, max_size_bytes=2 << 20)
    with pytest.raises(ModelLoadError, match="external data .* over the limit"):
        load_model(path, max_size_bytes=small + 1000)
