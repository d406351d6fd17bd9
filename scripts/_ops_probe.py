"""The dtype probe behind scripts/gen_ops_table.py: for one op, build a tiny single-node model per
element type the spec allows, run it on Ziggurat, and compare with a reference engine.

A probe counts only when onnxruntime runs it for at least one type (so a malformed probe is never
held against Ziggurat); per type, the reference is onnxruntime, or onnx's ReferenceEvaluator where
onnxruntime has no kernel for the type or disagrees, and a reference answer is used only if its
dtypes and shapes are the ones onnx shape inference (or the schema) gives.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

import numpy as np

# Ops whose outputs are random: a probe cannot compare them with another engine.
UNPROBED = {"Bernoulli", "Multinomial", "RandomNormalLike", "RandomUniformLike"}


# -- probe inputs ---------------------------------------------------------------------------------
def _np_dtype(name: str):
    """numpy dtype of an ONNX tensor element type name ('float16'), or None if unmapped."""
    import onnx

    try:
        proto = getattr(
            onnx.TensorProto, {"float": "FLOAT", "double": "DOUBLE"}.get(name, name.upper())
        )
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(proto))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _values(dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Two (2, 3) inputs of ``dtype``: A mixes signs, B is nonzero (safe divisor / exponent)."""
    if dtype.kind == "O":
        a, b = [["a", "bc", "d"], ["e", "f", "g"]], [["x", "bc", "z"], ["u", "f", "w"]]
        return np.array(a, dtype=object), np.array(b, dtype=object)
    if dtype == np.bool_:
        return np.array([[1, 0, 1], [0, 0, 1]], bool), np.array([[1, 1, 0], [0, 1, 0]], bool)
    a = np.array([[0.5, -1.25, 2.0], [0.25, 1.5, -0.75]])
    b = np.array([[1.5, 0.5, -2.0], [1.0, 0.75, 2.5]])
    if dtype.kind == "c":
        return (a + 0.5j * b).astype(dtype), (b - 0.25j * a).astype(dtype)
    if dtype.kind in "iu" or "int" in dtype.name:
        import ml_dtypes

        info = np.iinfo(dtype) if dtype.kind in "iu" else ml_dtypes.iinfo(dtype)
        a = np.clip([[3, -2, 5], [1, -4, 6]], info.min, info.max)
        b = np.clip([[2, 3, 1], [1, 2, 3]], 1, info.max)
    return a.astype(dtype), b.astype(dtype)


def _i64(*v) -> np.ndarray:
    return np.array(v, dtype=np.int64)


def _floaty(t: np.dtype) -> bool:
    return t.kind == "f" or "float" in t.name


# op -> f(a, b, dtype) -> (inputs, attrs); inputs positional, None = omitted, a list = a sequence.
Recipe = Callable[[np.ndarray, np.ndarray, np.dtype], tuple[list, dict]]
RECIPES: dict[str, Recipe] = {
    "Reshape": lambda a, b, t: ([a, _i64(3, 2)], {}),
    "Concat": lambda a, b, t: ([a, b], {"axis": 0}),
    "Slice": lambda a, b, t: ([a, _i64(0), _i64(2), _i64(1)], {}),
    "Squeeze": lambda a, b, t: ([a.reshape(1, 2, 3)], {}),
    "Unsqueeze": lambda a, b, t: ([a, _i64(0)], {}),
    "Expand": lambda a, b, t: ([a, _i64(2, 2, 3)], {}),
    "Tile": lambda a, b, t: ([a, _i64(2, 1)], {}),
    "Gather": lambda a, b, t: ([a, _i64(1, 0)], {}),
    "GatherElements": lambda a, b, t: ([a, _i64([1, 0, 1], [0, 0, 1])], {}),
    "GatherND": lambda a, b, t: ([a, _i64([1], [0])], {}),
    "ScatterElements": lambda a, b, t: ([a, _i64([1, 0, 1], [0, 1, 0]), b], {}),
    "ScatterND": lambda a, b, t: ([a, _i64([1]), b[:1]], {}),
    "Split": lambda a, b, t: ([a], {"axis": 1, "num_outputs": 3}),
    "Pad": lambda a, b, t: ([a, _i64(0, 1, 0, 1)], {}),
    "Compress": lambda a, b, t: ([a, np.array([True, False])], {"axis": 0}),
    "Where": lambda a, b, t: ([_values(np.dtype(bool))[0], a, b], {}),
    "MatMul": lambda a, b, t: ([a, b.reshape(3, 2)], {}),
    "Gemm": lambda a, b, t: ([a, b.reshape(3, 2)], {}),
    "Det": lambda a, b, t: ([a[:, :2]], {}),
    "CumSum": lambda a, b, t: ([a, np.array(1, np.int64)], {}),
    "TopK": lambda a, b, t: ([a, _i64(2)], {}),
    "Einsum": lambda a, b, t: ([a], {"equation": "ij->ji"}),
    "BitShift": lambda a, b, t: ([a, b], {"direction": "LEFT"}),
    "Mod": lambda a, b, t: ([a, b], {"fmod": int(_floaty(t))}),
    "Range": lambda a, b, t: ([np.array(v, t) for v in (1, 6, 2)], {}),
    # stash_type (the precision of the statistics) defaults to float; keep double in double.
    "LayerNormalization": lambda a, b, t: (
        [a, b[0]],
        {"stash_type": 11} if t == np.float64 else {},
    ),
    "GlobalAveragePool": lambda a, b, t: ([a.reshape(1, 2, 3)], {}),
    "GlobalMaxPool": lambda a, b, t: ([a.reshape(1, 2, 3)], {}),
    "GlobalLpPool": lambda a, b, t: ([a.reshape(1, 2, 3)], {}),
    "SequenceAt": lambda a, b, t: ([[a, b], np.array(1, np.int64)], {}),
    "SequenceLength": lambda a, b, t: ([[a, b]], {}),
    "SequenceErase": lambda a, b, t: ([[a, b], np.array(0, np.int64)], {}),
    "SequenceInsert": lambda a, b, t: ([[a], b], {}),
    "ConcatFromSequence": lambda a, b, t: ([[a, b]], {"axis": 0}),
    # ai.onnx.ml
    "Binarizer": lambda a, b, t: ([a], {"threshold": 0.6}),
    "Scaler": lambda a, b, t: ([a], {"offset": [0.5], "scale": [2.0]}),
    "Normalizer": lambda a, b, t: ([a], {"norm": "L2"}),
    "Imputer": lambda a, b, t: (
        [a],
        {"imputed_value_floats": [0.0], "replaced_value_float": 0.5}
        if _floaty(t)
        else {"imputed_value_int64s": [0], "replaced_value_int64": 1},
    ),
    "LinearRegressor": lambda a, b, t: (
        [a],
        {"coefficients": [1.0, 2.0, 3.0], "intercepts": [0.5]},
    ),
    "LinearClassifier": lambda a, b, t: (
        [a],
        {
            "coefficients": [1.0, 2.0, 3.0, -1.0, 0.0, 1.0],
            "classlabels_ints": [0, 1],
            "intercepts": [0.1, -0.2],
        },
    ),
    "SVMRegressor": lambda a, b, t: (
        [a],
        {
            "support_vectors": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
            "coefficients": [0.5, -0.5],
            "n_supports": 2,
            "kernel_type": "LINEAR",
            "rho": [0.1],
            "kernel_params": [0.1, 0.0, 3.0],
        },
    ),
    "FeatureVectorizer": lambda a, b, t: ([a, b], {"inputdimensions": [3, 3]}),
    "ArrayFeatureExtractor": lambda a, b, t: ([a, _i64(0, 2)], {}),
    "OneHotEncoder": lambda a, b, t: (
        [a],
        {"cats_strings": ["a", "e", "f"]} if t.kind == "O" else {"cats_int64s": [1, 3, 5]},
    ),
    "CategoryMapper": lambda a, b, t: ([a], {"cats_strings": ["a", "e"], "cats_int64s": [3, 1]}),
}
VARY_INPUT = {"Where": 1}  # which input's type parameter the dtype sweep varies (default 0)
N_OUTPUTS = {"Split": 3}  # outputs to declare where the schema's count is not fixed
# (engine, op, dtype) where a reference engine's answer is known wrong: it is not used.
REFERENCE_QUIRKS = {("reference", "Pad", "string"): "pads with '0'; the spec pads with ''"}


def _generic(schema) -> Recipe | None:
    """A recipe for ai.onnx ops whose required inputs all share the first input's type and that
    have no required attributes (unary/binary/variadic elementwise, reductions, ...)."""
    import onnx.defs

    P = onnx.defs.OpSchema.FormalParameterOption
    if any(a.required for a in schema.attributes.values()):
        return None
    formals, n_in = list(schema.inputs), 0
    for i, f in enumerate(formals):
        if f.option == P.Optional:
            if any(g.option != P.Optional for g in formals[i:]):
                return None
            break
        if f.type_str != formals[0].type_str:
            return None
        n_in += 2 if f.option == P.Variadic else 1
    return lambda a, b, t: ([a if i % 2 == 0 else b for i in range(n_in)], {})


def _probe_plan(row) -> tuple[Recipe, list[str]] | None:
    """(recipe, element type names to try) for an op, or None if it is not probed."""
    s = row.schema
    if row.name in UNPROBED or row.deprecated or not s.inputs:
        return None
    recipe = RECIPES.get(row.name)
    if recipe is None and row.domain == "ai.onnx":  # ml ops' default attributes make no model
        recipe = _generic(s)
    if recipe is None:
        return None
    param = s.inputs[VARY_INPUT.get(row.name, 0)].type_str
    allowed = [c.allowed_type_strs for c in s.type_constraints if c.type_param_str == param]
    types = [
        re.fullmatch(r"(?:seq\()?tensor\((\w+)\)\)?", t)
        for t in (allowed[0] if allowed else [param])
    ]
    return recipe, [m[1] for m in types if m]


# -- running one probe ----------------------------------------------------------------------------
def _model(row, inputs: list, attrs: dict):
    """The single-node model, with output types filled in by onnx shape inference (strict)."""
    import onnx
    from onnx import helper

    P = onnx.defs.OpSchema.FormalParameterOption
    names, vinfo, feeds = [], [], {}
    for i, x in enumerate(inputs):
        names.append("" if x is None else f"x{i}")
        if isinstance(x, list):
            elem = helper.np_dtype_to_tensor_dtype(x[0].dtype)
            vinfo.append(helper.make_tensor_sequence_value_info(f"x{i}", elem, None))
        elif x is not None:
            elem = helper.np_dtype_to_tensor_dtype(x.dtype)
            vinfo.append(helper.make_tensor_value_info(f"x{i}", elem, list(x.shape)))
        if x is not None:
            feeds[f"x{i}"] = x
    while names and names[-1] == "":
        names.pop()
    n_out = N_OUTPUTS.get(row.name) or sum(f.option == P.Single for f in row.schema.outputs)
    outs = [f"y{i}" for i in range(n_out)]
    domain = "" if row.domain == "ai.onnx" else row.domain
    node = helper.make_node(row.name, names, outs, domain=domain, **attrs)
    youts = [helper.make_value_info(o, onnx.TypeProto()) for o in outs]
    graph = helper.make_graph([node], "probe", vinfo, youts)
    opsets = [helper.make_opsetid("", onnx.defs.onnx_opset_version())]
    if domain:
        opsets.append(helper.make_opsetid(domain, row.spec_versions[-1]))
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    # Some ops (most of ai.onnx.ml) have no inference function: take fixed types from the schema.
    for o, f in zip(model.graph.output, row.schema.outputs):
        fixed = re.fullmatch(r"tensor\((\w+)\)", f.type_str)
        if fixed and not o.type.tensor_type.elem_type and _np_dtype(fixed[1]) is not None:
            o.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(_np_dtype(fixed[1]))
    return model, feeds


def _run_ort(model, feeds):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _run_reference(model, feeds):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, feeds)


def _run_ziggurat(model, feeds):
    import ziggurat as zg

    return zg.InferenceSession(model.SerializeToString()).run(None, feeds)


ENGINES = {"onnxruntime": _run_ort, "reference": _run_reference}


def _tolerance(dtype: np.dtype) -> tuple[float, float]:
    if dtype in (np.float64, np.complex128):
        return 1e-7, 1e-9
    if dtype in (np.float32, np.complex64):
        return 1e-4, 1e-5
    if dtype == np.float16:
        return 1e-2, 1e-3
    if "bfloat16" in dtype.name:
        return 3e-2, 1e-2
    if "float" in dtype.name:  # float8 / float6 / float4: one step of a 1-3 bit mantissa
        return 0.2, 0.1
    return 0.0, 0.0


def _consistent(model, outs) -> bool:
    """Whether an engine's outputs have the dtypes (and static shapes) spec inference gives."""
    import onnx

    for o, v in zip(model.graph.output, outs):
        t = o.type.tensor_type
        if not o.type.HasField("tensor_type") or not t.elem_type:
            continue
        v = np.asarray(v)
        if v.dtype != onnx.helper.tensor_dtype_to_np_dtype(t.elem_type):
            return False
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if t.HasField("shape") and (
            len(dims) != v.ndim or any(d not in (None, n) for d, n in zip(dims, v.shape))
        ):
            return False
    return len(outs) == len(model.graph.output)


def _same(expected, got) -> None:
    from runner import compare

    assert len(got) == len(expected), f"{len(got)} outputs, expected {len(expected)}"
    for i, (e, g) in enumerate(zip(expected, got)):
        first = e[0] if isinstance(e, list) and e else e
        e = e if isinstance(e, list) else np.asarray(e)
        compare(e, g, *_tolerance(np.asarray(first).dtype), where=f"output {i}")


def _runs(engine, model, feeds):
    try:
        return engine(model, feeds)
    except Exception:
        return None


def probe_dtype(row, recipe: Recipe, dtype_name: str) -> tuple[str, bool, str]:
    """(status, onnxruntime_ran, why) for one dtype. status: "ok" (Ziggurat matches a reference
    engine whose outputs have the spec's dtypes and shapes), "unverified" (Ziggurat ran with the
    spec's output dtypes; no reference gives a usable answer), "fail", or "skip" (no probe)."""
    dtype = _np_dtype(dtype_name)
    if dtype is None:
        return "skip", False, "no numpy dtype"
    try:
        model, feeds = _model(row, *recipe(*_values(dtype), dtype))
    except Exception as exc:
        return "skip", False, f"probe not built: {exc}"
    try:
        got = _run_ziggurat(model, feeds)
        shown = [(np.asarray(g).dtype, np.shape(g)) for g in got if not isinstance(g, list)]
        assert _consistent(model, got), f"outputs {shown} are not what the spec infers"
    except Exception as exc:
        return "fail", _runs(_run_ort, model, feeds) is not None, f"{type(exc).__name__}: {exc}"
    ort_ran, usable, why = False, False, ""
    for name, engine in ENGINES.items():  # onnxruntime lacks many dtypes and has a few bugs
        if (name, row.name, dtype_name) in REFERENCE_QUIRKS:
            continue
        expected = _runs(engine, model, feeds)
        ort_ran |= name == "onnxruntime" and expected is not None
        if expected is None or not _consistent(model, expected):
            continue
        usable = True
        try:
            _same(expected, got)
            return "ok", ort_ran, ""
        except AssertionError as exc:
            why = why or f"vs {name}: {exc}"
    return ("fail" if usable else "unverified"), ort_ran, why


def probe(row, verbose: bool = False) -> dict[str, str] | None:
    """dtype -> status for a probed op, or None when the op is not probed or the probe is not
    valid for it (onnxruntime runs it for no dtype)."""
    plan = _probe_plan(row)
    if plan is None or not row.kernel_versions:
        return None
    recipe, dtypes = plan
    out, any_ort, fails = {}, False, []
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for t in dtypes:
            status, ort_ran, why = probe_dtype(row, recipe, t)
            any_ort |= ort_ran
            if status != "skip":
                out[t] = status
            if status == "fail":
                fails.append(f"  probe FAIL {row.name} {t}: {why[:400]}")
    if verbose and any_ort and fails:
        print("\n".join(fails))
    return out if any_ort else None
