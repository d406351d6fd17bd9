"""passes/fuse_conv.py: which convolutions fuse what, and the output layout/precision it picks."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ziggurat.formats.onnx import load_model
from ziggurat.passes import fuse_conv


def _graph(nodes, outputs, inits):
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.ones(s, np.float32), n) for n, s in inits.items()],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return load_model(m.SerializeToString()).graph


W = {"w1": (4, 4, 3, 3), "w2": (4, 4, 1, 1), "w3": (4, 4, 1, 1)}


def _by_output(graph):
    return {n.outputs[0]: n for n in graph.nodes}


def test_chain_of_convs_is_channels_last_until_a_boundary():
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),  # lone conv
        helper.make_node("Relu", ["a"], ["ar"]),
        helper.make_node("Conv", ["ar", "w2"], ["b"]),
        helper.make_node("MaxPool", ["b"], ["p"], kernel_shape=[2, 2]),
        helper.make_node("Conv", ["p", "w3"], ["c"]),
        helper.make_node("Flatten", ["c"], ["y"]),
    ]
    g = fuse_conv.run(_graph(nodes, ["y"], W))
    g.lint()
    ops = _by_output(g)
    assert [n.op_type for n in g.nodes] == [
        "FusedConv",
        "FusedConv",
        "MaxPool",
        "FusedConv",
        "Flatten",
    ]
    assert ops["ar"].attrs["activation"] == "relu" and ops["ar"].attrs["layout"] == "nhwc"
    assert ops["b"].attrs["layout"] == "nhwc"  # read by a pool
    assert "layout" not in ops["c"].attrs  # read by Flatten: plain NCHW
    assert all("precision" not in n.attrs for n in g.nodes if n.op_type == "FusedConv")


def test_graph_output_and_mixed_readers_stay_nchw():
    nodes = [
        helper.make_node("Conv", ["x", "w2"], ["a"]),
        helper.make_node("Conv", ["a", "w3"], ["b"]),
        helper.make_node("Sigmoid", ["a"], ["s"]),  # a second, non-conv reader of a
        helper.make_node("Conv", ["b", "w2"], ["y"]),
    ]
    g = fuse_conv.run(_graph(nodes, ["y", "b"], W))
    ops = _by_output(g)
    assert "layout" not in ops["a"].attrs  # Sigmoid reads it
    assert "layout" not in ops["b"].attrs  # a graph output
    assert "layout" not in ops["y"].attrs


def test_residual_fuses_and_bf16_marks_precision_and_outputs():
    nodes = [
        helper.make_node("Conv", ["x", "w2"], ["a"]),
        helper.make_node("Conv", ["a", "w3"], ["b"]),
        helper.make_node("Add", ["b", "a"], ["s"]),  # residual
        helper.make_node("Relu", ["s"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    g = fuse_conv.run(_graph(nodes, ["y"], W), precision="bf16")
    g.lint()
    ops = _by_output(g)
    assert [n.op_type for n in g.nodes] == ["FusedConv", "FusedConv", "MaxPool", "Flatten"]
    res = ops["r"]
    assert res.inputs[3] == "a" and res.attrs["activation"] == "relu"
    assert res.attrs["precision"] == "bf16" and ops["a"].attrs["precision"] == "bf16"
    assert ops["a"].attrs["out_dtype"] == "bf16"  # read only by convolutions (data and skip)
    assert "out_dtype" not in res.attrs  # read by a pool: float32
    assert res.attrs["layout"] == "nhwc"


def test_integer_conv_is_left_alone():
    g = _graph([helper.make_node("Conv", ["x", "w1"], ["y"], pads=[1, 1, 1, 1])], ["y"], W)
    g.initializers["w1"] = np.ones((4, 4, 3, 3), np.int8)
    assert [n.op_type for n in fuse_conv.run(g).nodes] == ["Conv"]


def test_bf16_flows_through_a_maxpool_between_convolutions():
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2]),
        helper.make_node("Conv", ["p", "w2"], ["b"]),
        helper.make_node("MaxPool", ["b"], ["q"], kernel_shape=[2, 2]),
        helper.make_node("Flatten", ["q"], ["y"]),
    ]
    ops = _by_output(fuse_conv.run(_graph(nodes, ["y"], W), precision="bf16"))
    assert ops["a"].attrs["out_dtype"] == "bf16"  # the pool hands bf16 on to a convolution
    assert "out_dtype" not in ops["b"].attrs  # this pool's reader is Flatten: float32


def test_residual_that_dies_at_its_convolution_is_marked_in_place():
    nodes = [
        helper.make_node("Conv", ["x", "w2"], ["a"]),
        helper.make_node("Relu", ["a"], ["ar"]),
        helper.make_node("Conv", ["ar", "w3"], ["b0"]),
        helper.make_node("Conv", ["b0", "w3"], ["b"]),
        helper.make_node("Add", ["b", "ar"], ["s"]),  # ar's last reader: may be overwritten
        helper.make_node("Relu", ["s"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["c"]),
        helper.make_node("Add", ["c", "r"], ["t"]),  # r is read again below: kept
        helper.make_node("Add", ["t", "r"], ["u"]),
        helper.make_node("Conv", ["u", "w3"], ["d"]),
        helper.make_node("Add", ["d", "x"], ["y"]),  # a graph input: never written
    ]
    g = fuse_conv.run(_graph(nodes, ["y"], W))
    g.lint()
    ops = _by_output(g)
    assert ops["r"].inputs[3] == "ar" and ops["r"].attrs["inplace_skip"] == 1
    assert ops["t"].inputs[3] == "r" and "inplace_skip" not in ops["t"].attrs
    assert ops["y"].inputs[3] == "x" and "inplace_skip" not in ops["y"].attrs


def test_residual_that_is_also_the_data_input_is_kept():
    nodes = [
        helper.make_node("Conv", ["x", "w2"], ["a"]),
        helper.make_node("Conv", ["a", "w3"], ["b"]),
        helper.make_node("Add", ["b", "a"], ["y"]),  # the fused node reads a twice
    ]
    ops = _by_output(fuse_conv.run(_graph(nodes, ["y"], W)))
    assert ops["y"].inputs[0] == ops["y"].inputs[3] == "a"
    assert "inplace_skip" not in ops["y"].attrs


def test_residual_read_by_a_graph_output_or_a_later_branch_is_kept():
    nodes = [
        helper.make_node("Conv", ["x", "w2"], ["a"]),
        helper.make_node("Conv", ["a", "w3"], ["b"]),
        helper.make_node("Add", ["b", "a"], ["s"]),
        helper.make_node("Conv", ["s", "w2"], ["c"]),
        helper.make_node("Add", ["c", "s"], ["t"]),
        helper.make_node("Sigmoid", ["s"], ["v"]),  # not an ancestor of t's convolution
    ]
    ops = _by_output(fuse_conv.run(_graph(nodes, ["t", "v", "a"], W)))
    assert "inplace_skip" not in ops["s"].attrs  # a is a graph output
    assert "inplace_skip" not in ops["t"].attrs  # Sigmoid may run after it


def test_residual_with_a_view_reader_is_kept():
    """An Identity/Reshape of the residual may alias it: its readers could see the result."""
    nodes = [
        helper.make_node("Conv", ["x", "w2"], ["a"]),
        helper.make_node("Identity", ["a"], ["ai"]),  # a view of a, read before and after
        helper.make_node("Conv", ["ai", "w3"], ["b"]),
        helper.make_node("Add", ["b", "a"], ["s"]),
        helper.make_node("Add", ["s", "ai"], ["y"]),
    ]
    ops = _by_output(fuse_conv.run(_graph(nodes, ["y"], W)))
    assert ops["s"].inputs[3] == "a" and "inplace_skip" not in ops["s"].attrs
