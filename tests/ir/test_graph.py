"""IR: lint, topological order, free names, text form."""

from __future__ import annotations

import pytest

from ziggurat import ir
from ziggurat.errors import GraphError


def _vi(name):
    return ir.ValueInfo(name, ir.Type("tensor", ir.dtypes.FLOAT, ("N", 3)))


def test_toposort_reorders_and_lint_accepts():
    b = ir.Node("Relu", ["a"], ["b"], name="second")
    a = ir.Node("Neg", ["x"], ["a"], name="first")
    g = ir.Graph(nodes=[b, a], inputs=[_vi("x")], outputs=[_vi("b")])
    with pytest.raises(GraphError, match="reads 'a'"):
        g.lint()
    g.toposort()
    assert [n.name for n in g.nodes] == ["first", "second"]
    g.lint()


def test_cycle_is_reported():
    g = ir.Graph(
        nodes=[ir.Node("Neg", ["b"], ["a"], name="p"), ir.Node("Neg", ["a"], ["b"], name="q")],
        outputs=[_vi("b")],
    )
    with pytest.raises(GraphError, match="cycle"):
        g.toposort()


def test_double_assignment_and_missing_output():
    g = ir.Graph(
        nodes=[ir.Node("Neg", ["x"], ["a"]), ir.Node("Neg", ["x"], ["a"])],
        inputs=[_vi("x")],
        outputs=[_vi("a")],
    )
    with pytest.raises(GraphError, match="assigned twice"):
        g.lint()
    g2 = ir.Graph(nodes=[], inputs=[_vi("x")], outputs=[_vi("y")])
    with pytest.raises(GraphError, match="never produced"):
        g2.lint()


def test_free_names_of_nested_subgraphs():
    inner = ir.Graph(nodes=[ir.Node("Add", ["u", "outer2"], ["r"])], outputs=[_vi("r")])
    mid = ir.Graph(
        nodes=[
            ir.Node("Neg", ["outer1"], ["u"]),
            ir.Node("If", ["c"], ["v"], {"then_branch": inner}),
        ],
        outputs=[_vi("v")],
    )
    assert mid.free_names() == {"outer1", "outer2", "c"}
    top = ir.Graph(
        nodes=[ir.Node("If", ["c"], ["y"], {"then_branch": mid, "else_branch": mid})],
        inputs=[_vi("c"), _vi("outer1"), _vi("outer2")],
        outputs=[_vi("y")],
    )
    top.lint()
    assert top.free_names() == set()


def test_text_form_is_readable():
    g = ir.Graph(
        nodes=[ir.Node("LeakyRelu", ["x"], ["y"], {"alpha": 0.1})],
        inputs=[_vi("x")],
        outputs=[_vi("y")],
        name="g",
    )
    text = str(g)
    assert "%y = LeakyRelu<alpha=0.1>(%x)" in text
    assert "graph g(%x: tensor(float)[N,3])" in text
