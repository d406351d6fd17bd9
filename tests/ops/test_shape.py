"""Shape ops (ops/shape.py, ops/pad.py): old-opset forms, edge cases the conformance suite does not
pin, and onnxruntime parity on seeded random inputs."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from ziggurat.errors import ExecutionError
from ziggurat.ops import indexing as IDX
from ziggurat.ops import pad as P
from ziggurat.ops import random as RND
from ziggurat.ops import shape as S

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def ort_run(op, inputs, attrs=None, opset=18, n_outputs=1):
    """Run one ``op`` node in onnxruntime; ``inputs`` are arrays (None for omitted)."""
    names = [f"i{k}" if x is not None else "" for k, x in enumerate(inputs)]
    outs = [f"o{k}" for k in range(n_outputs)]
    node = helper.make_node(op, names, outs, **(attrs or {}))
    g_in = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
        for n, x in zip(names, inputs)
        if x is not None
    ]
    g_out = [onnx.ValueInfoProto(name=o) for o in outs]
    model = helper.make_model(
        helper.make_graph([node], "g", g_in, g_out), opset_imports=[helper.make_opsetid("", opset)]
    )
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: x for n, x in zip(names, inputs) if x is not None})


def i64(*v):
    return np.array(v, dtype=np.int64)


rng = np.random.default_rng(0)


# -- Reshape / Squeeze / Unsqueeze / Flatten -------------------------------------------------------


def test_reshape_zero_copies_dim_unless_allowzero():
    x = np.zeros((2, 3, 4), np.float32)
    assert S.Reshape(x, i64(0, -1))[0].shape == (2, 12)
    y = np.zeros((0, 3), np.float32)
    assert S.Reshape(y, i64(3, 0), allowzero=1)[0].shape == (3, 0)


def test_reshape_attribute_form_and_bad_shape():
    x = np.arange(6, dtype=np.int32)
    (y,) = S.Reshape_1(x, shape=[2, -1])
    assert y.shape == (2, 3) and y.dtype == np.int32
    with pytest.raises(ExecutionError, match="same number of elements"):
        S.Reshape(x, i64(4, 2))
    with pytest.raises(ExecutionError, match="more than one -1"):
        S.Reshape(x, i64(-1, -1))


def test_squeeze_unsqueeze_old_and_new_forms():
    x = np.zeros((1, 3, 1, 2), np.float32)
    assert S.Squeeze(x)[0].shape == (3, 2)
    assert S.Squeeze(x, i64(-2))[0].shape == (1, 3, 2)
    assert S.Squeeze_1(x, axes=[0])[0].shape == (3, 1, 2)
    assert S.Squeeze(x, i64())[0].shape == (3, 2)  # empty axes: all, as in onnxruntime
    with pytest.raises(ExecutionError, match="not of size 1"):
        S.Squeeze(x, i64(1))
    y = np.zeros((3, 4), np.float32)
    assert S.Unsqueeze(y, i64(-1, 0))[0].shape == (1, 3, 4, 1)
    assert S.Unsqueeze_1(y, axes=[1])[0].shape == (3, 1, 4)
    assert S.Unsqueeze(np.float32(2.0) * np.ones(()), i64(0))[0].shape == (1,)


def test_flatten_edges():
    x = np.zeros((2, 3, 4), np.float32)
    assert S.Flatten(x, axis=0)[0].shape == (1, 24)
    assert S.Flatten(x, axis=3)[0].shape == (24, 1)
    assert S.Flatten(x, axis=-1)[0].shape == (6, 4)


# -- Split -----------------------------------------------------------------------------------------


def test_split_old_forms():
    x = np.arange(10, dtype=np.float32)
    parts = S.Split_1(x, split=[3, 7])
    assert [p.shape for p in parts] == [(3,), (7,)]
    parts = S.Split_1(x, i64(4, 6))  # Split-1 also took the sizes as a second input
    assert [p.shape for p in parts] == [(4,), (6,)]
    parts = S.Split_1(x, n_outputs=5)
    assert [p.shape for p in parts] == [(2,)] * 5


def test_split_counts_and_errors():
    x = np.arange(14, dtype=np.float32).reshape(2, 7)
    parts = S.Split(x, axis=-1, num_outputs=3)
    assert [p.shape for p in parts] == [(2, 3), (2, 3), (2, 1)]
    assert [p.shape for p in S.Split(x[:, :6], i64(), axis=1, n_outputs=2)] == [(2, 3)] * 2
    with pytest.raises(ExecutionError, match="equal outputs"):
        S.Split(x, axis=1, n_outputs=2)
    with pytest.raises(ExecutionError, match="add up"):
        S.Split(x, i64(3, 3), axis=1)


# -- Slice -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "starts,ends,axes,steps",
    [
        ((INT64_MAX,), (INT64_MIN,), (1,), (-1,)),
        ((-1, 5), (INT64_MIN, -100), (0, 2), (-2, -3)),
        ((1, -3), (INT64_MAX, 100), (-1, 0), (2, 1)),
        ((20,), (-20,), (2,), (-1,)),
        ((3,), (1,), (1,), (1,)),  # empty
    ],
)
def test_slice_matches_onnxruntime(starts, ends, axes, steps):
    x = rng.standard_normal((5, 6, 7)).astype(np.float32)
    args = [x, i64(*starts), i64(*ends), i64(*axes), i64(*steps)]
    np.testing.assert_array_equal(S.Slice(*args)[0], ort_run("Slice", args, opset=13)[0])


@pytest.mark.parametrize(
    "starts,ends,steps",
    [
        ((-7,), (-5,), (-1,)),  # start < -dim clamps to 0 (not to -1 as in Python): [0]
        ((-4,), (INT64_MIN,), (-1,)),  # [0]
        ((-100,), (-100,), (-2,)),  # start 0, end -1: [0]
        ((2,), (-4,), (-1,)),  # end < -dim clamps to -1: through index 0
        ((-1,), (-1,), (-1,)),  # end -1 is dim - 1 here, not "before 0": empty
        ((100,), (0,), (-2,)),  # start > dim clamps to dim - 1
        ((-7, 9), (-9, -9), (-1, -3)),  # both axes
    ],
)
def test_slice_negative_step_edges_match_onnxruntime(starts, ends, steps):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    axes = tuple(range(len(starts)))
    args = [x, i64(*starts), i64(*ends), i64(*axes), i64(*steps)]
    want = ort_run("Slice", args, opset=13)[0]
    got = S.Slice(*args)[0]
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_slice_grid_matches_onnxruntime():
    """Every start/end/step combination on small dims (zero included), through one session."""
    node = helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"])
    g_in = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None])] + [
        helper.make_tensor_value_info(n, onnx.TensorProto.INT64, [1]) for n in "seat"
    ]
    graph = helper.make_graph([node], "g", g_in, [onnx.ValueInfoProto(name="y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    bounds = [INT64_MIN, -6, -4, -3, -2, -1, 0, 1, 2, 3, 5, INT64_MAX]
    for dim in range(4):
        x = np.arange(dim, dtype=np.float32)
        for s, e, t in itertools.product(bounds, bounds, (-3, -1, 1, 2)):
            if t < 0 and e == INT64_MAX:
                continue  # onnxruntime bug: it reads this end as "through index 0"; the spec, []
            feeds = {"x": x, "s": i64(s), "e": i64(e), "a": i64(0), "t": i64(t)}
            want = sess.run(None, feeds)[0]
            got = S.Slice(x, feeds["s"], feeds["e"], feeds["a"], feeds["t"])[0]
            assert got.tolist() == want.tolist(), (dim, s, e, t)


def test_slice_attribute_form():
    x = np.arange(20).reshape(4, 5)
    (y,) = S.Slice_1(x, starts=[1, -2], ends=[100, 5])
    np.testing.assert_array_equal(y, x[1:, -2:])


# -- Pad -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_matches_onnxruntime(mode):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    pads = i64(1, 0, 2, 2, 3, 1)
    value = np.array(1.5, np.float32) if mode == "constant" else None
    args = [x, pads] + ([value] if value is not None else [])
    np.testing.assert_array_equal(
        P.Pad(*args, mode=mode)[0], ort_run("Pad", args, {"mode": mode}, opset=19)[0]
    )


def test_pad_negative_crops_axes_and_int_dtype():
    x = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    (y,) = P.Pad(x, i64(-1, 2, 0, -1), np.array(7, np.int32), i64(1, -1))
    assert y.dtype == np.int32
    # axis 1: crop one at the start; axis 2: pad two at the start, crop one at the end
    expected = np.pad(x[:, 1:, :-1], [(0, 0), (0, 0), (2, 0)], constant_values=7)
    np.testing.assert_array_equal(y, expected)


def test_pad_attribute_forms():
    x = np.ones((2, 2), np.float32)
    assert P.Pad_2(x, pads=[1, 0, 0, 1], value=2.0)[0].tolist() == [[2, 2, 2], [1, 1, 2], [1, 1, 2]]
    assert P.Pad_1(x, paddings=[0, 1, 0, 0], mode="edge")[0].shape == (2, 3)


def test_center_crop_pad_subset_of_axes():
    x = rng.standard_normal((3, 9, 4)).astype(np.float32)
    (y,) = P.CenterCropPad(x, i64(6, 7), axes=[1, -1])
    assert y.shape == (3, 6, 7)
    np.testing.assert_array_equal(y[:, :, 1:5], x[:, 1:7, :])
    assert not y[:, :, [0, 5, 6]].any()


def test_reverse_sequence_matches_onnxruntime():
    x = rng.standard_normal((3, 5, 2)).astype(np.float32)
    lens = i64(5, 1, 3)
    attrs = {"batch_axis": 0, "time_axis": 1}
    np.testing.assert_array_equal(
        IDX.ReverseSequence(x, lens, **attrs)[0],
        ort_run("ReverseSequence", [x, lens], attrs, opset=10)[0],
    )


# -- Tile / Expand / Shape / Size ------------------------------------------------------------------


def test_tile_both_forms():
    x = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(S.Tile(x, i64(2, 1))[0], np.tile(x, (2, 1)))
    np.testing.assert_array_equal(S.Tile_1(x, i64(3), i64(1))[0], np.tile(x, (1, 3)))


def test_expand_is_writable_copy_and_bidirectional():
    x = np.arange(3, dtype=np.float32).reshape(3, 1)
    (y,) = S.Expand(x, i64(2, 1, 4))
    assert y.shape == (2, 3, 4) and y.flags.writeable and y.flags.c_contiguous
    (z,) = S.Expand(np.ones((2, 5), np.float32), i64(1, 1))
    assert z.shape == (2, 5)


def test_expand_keeps_rank0():
    # ascontiguousarray would turn the 0-d result into shape (1,)
    (y,) = S.Expand(np.array(3.0, np.float32), i64())
    assert type(y) is np.ndarray and y.shape == () and y == 3.0 and y.flags.writeable
    (z,) = S.Expand(np.array(3, np.int32), i64(2, 1))
    assert z.shape == (2, 1) and z.dtype == np.int32
    assert S.Expand(np.ones((1, 0), np.float32), i64(3, 1))[0].shape == (3, 0)


def test_shape_slices_and_size():
    x = np.zeros((2, 3, 4, 5), np.float32)
    assert S.Shape(x, start=-3, end=-1)[0].tolist() == [3, 4]
    assert S.Shape(x, start=10)[0].tolist() == []
    (n,) = S.Size(x)
    assert n.dtype == np.int64 and n.shape == () and n == 120


# -- DepthToSpace / SpaceToDepth / Dropout ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_space_round_trip_and_onnxruntime(mode):
    x = rng.standard_normal((2, 8, 3, 5)).astype(np.float32)
    (y,) = S.DepthToSpace(x, blocksize=2, mode=mode)
    np.testing.assert_array_equal(
        y, ort_run("DepthToSpace", [x], {"blocksize": 2, "mode": mode}, opset=13)[0]
    )
    np.testing.assert_array_equal(S.SpaceToDepth(y, blocksize=2, mode=mode)[0], x)


def test_dropout_modes():
    x = rng.standard_normal((4, 5)).astype(np.float32)
    y, mask = RND.Dropout(x, n_outputs=2)
    assert y is x and mask.dtype == np.bool_ and mask.all()
    (only,) = RND.Dropout(x)  # one output declared: no mask allocated
    assert only is x
    y1, m1 = RND.Dropout(x, np.float32(0.5), np.array(True), seed=3)
    y2, m2 = RND.Dropout(x, np.float32(0.5), np.array(True), seed=3)
    np.testing.assert_array_equal(m1, m2)
    assert y1.dtype == np.float32
    np.testing.assert_allclose(y1, np.where(m1, x * 2, 0))
    y, mask = RND.Dropout_1(
        x, ratio=0.3, opset=7, n_outputs=2
    )  # before opset 10 the mask had the input's type
    assert y is x and mask.dtype == np.float32
    assert RND.Dropout_1(x, opset=10, n_outputs=2)[1].dtype == np.bool_


def test_identity_passes_sequences_and_optionals():
    seq = [np.zeros(2), np.ones(3)]
    assert S.Identity(seq)[0] is seq
    assert S.Identity(None)[0] is None
