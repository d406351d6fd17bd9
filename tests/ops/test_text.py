"""String kernels: TfIdfVectorizer and StringNormalizer against onnxruntime, and the edge cases of
StringSplit / StringConcat / RegexFullMatch."""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from ziggurat.errors import ExecutionError
from ziggurat.ops.text import (
    RegexFullMatch,
    StringConcat,
    StringNormalizer,
    StringSplit,
    TfIdfVectorizer,
)


def run_ort(op, x, opset, **attrs):
    elem = TensorProto.STRING if x.dtype == object else helper.np_dtype_to_tensor_dtype(x.dtype)
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", elem, x.shape)],
        [helper.make_empty_tensor_value_info("y")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


POOL = [1, 2, 3, 4, 1, 2, 2, 3, 3, 3, 0, 5, 1, 2, 3, 4, 4, 4]  # 4 unigrams, 4 bigrams, 2 trigrams
TOKENS = np.random.default_rng(3).integers(0, 6, (3, 12)).astype(np.int64)


@pytest.mark.parametrize(
    "mode,skip,min_n,max_n",
    [
        c
        for c in itertools.product(["TF", "IDF", "TFIDF"], [0, 1, 3], [1, 2], [1, 2, 3])
        if c[2] <= c[3]
    ],
)
@pytest.mark.parametrize("strings", [False, True])
def test_tfidf_matches_onnxruntime(mode, skip, min_n, max_n, strings):
    attrs = dict(
        mode=mode,
        max_skip_count=skip,
        min_gram_length=min_n,
        max_gram_length=max_n,
        ngram_counts=[0, 4, 12],
        ngram_indexes=list(range(10))[::-1],
        weights=list(np.linspace(0.5, 2, 10)),
    )
    x = TOKENS
    if strings:
        attrs["pool_strings"] = [str(p) for p in POOL]
        x = TOKENS.astype(str).astype(object)
    else:
        attrs["pool_int64s"] = POOL
    (y,) = TfIdfVectorizer(x, **attrs)
    assert y.dtype == np.float32 and y.shape == (3, 10)
    np.testing.assert_allclose(y, run_ort("TfIdfVectorizer", x, 9, **attrs), rtol=1e-6)
    (y1,) = TfIdfVectorizer(x[0], **attrs)  # 1-D input gives a 1-D output
    np.testing.assert_allclose(y1, y[0])


def test_tfidf_needs_exactly_one_pool():
    with pytest.raises(ExecutionError, match="exactly one"):
        TfIdfVectorizer(
            TOKENS,
            mode="TF",
            max_skip_count=0,
            min_gram_length=1,
            max_gram_length=1,
            ngram_counts=[0],
            ngram_indexes=[0],
        )


# onnxruntime's StringNormalizer needs an installed en_US locale, so expectations are explicit.
@pytest.mark.parametrize(
    "action,case_sensitive,expected",
    [
        ("NONE", 1, ["Monday", "tuesday", "MONDAY", "Straße", "wednesday"]),
        ("NONE", 0, ["tuesday", "Straße"]),
        ("LOWER", 0, ["tuesday", "straße"]),
        ("UPPER", 1, ["MONDAY", "TUESDAY", "MONDAY", "STRASSE", "WEDNESDAY"]),
    ],
)
def test_string_normalizer(action, case_sensitive, expected):
    x = np.array([["Monday", "tuesday", "MONDAY", "Straße", "wednesday"]], dtype=object)
    attrs = dict(
        case_change_action=action,
        is_case_sensitive=case_sensitive,
        stopwords=["monday", "Wednesday"],
    )
    (y,) = StringNormalizer(x, **attrs)
    assert y.dtype == object and y.shape == (1, len(expected))
    assert y.tolist() == [expected]


def test_string_normalizer_all_dropped_gives_one_empty_string():
    (y,) = StringNormalizer(np.array(["a", "A"], dtype=object), stopwords=["a"])
    np.testing.assert_array_equal(y, np.array([""], dtype=object))


def test_string_split_pads_and_counts():
    x = np.array([["a,b,,c", ""], ["no-delims", ",x,"]], dtype=object)
    y, n = StringSplit(x, delimiter=",")
    assert y.shape == (2, 2, 4) and n.dtype == np.int64
    np.testing.assert_array_equal(n, [[4, 1], [1, 3]])
    assert y[0, 0].tolist() == ["a", "b", "", "c"] and y[1, 1].tolist() == ["", "x", "", ""]
    y, n = StringSplit(np.array(["  a  b c "], dtype=object), maxsplit=1)
    assert y.tolist() == [["a", "b c "]] and n.tolist() == [2]


def test_string_concat_broadcasts_unicode():
    (z,) = StringConcat(
        np.array([["ab"], ["的"]], dtype=object), np.array(["1", "2", ""], dtype=object)
    )
    assert z.dtype == object
    assert z.tolist() == [["ab1", "ab2", "ab"], ["的1", "的2", "的"]]


def test_regex_full_match():
    x = np.array([["abc", "abcd"], ["", "ABC"]], dtype=object)
    (y,) = RegexFullMatch(x, pattern="[a-c]+")
    assert y.dtype == np.bool_
    np.testing.assert_array_equal(y, [[True, False], [False, False]])
    with pytest.raises(ExecutionError, match="invalid pattern"):
        RegexFullMatch(x, pattern="(")
