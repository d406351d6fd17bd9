"""Tensor codecs: JSON and binary decoding, output encoding, non-finite floats, BF16."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from ziggurat.server import codecs
from ziggurat.server.errors import HTTPError


def test_nonfinite_outputs_survive_json():
    arr = np.array([1.0, np.nan, np.inf, -np.inf], np.float32)
    tensors, chunks, nf = codecs.encode_outputs([(codecs.RequestedOutput("y"), arr)], False)
    body, n = codecs.encode_response({"outputs": tensors}, chunks, nf)
    assert nf and n is None
    data = json.loads(body)["outputs"][0]["data"]
    assert data[0] == 1.0 and np.isnan(data[1]) and data[2] == np.inf and data[3] == -np.inf


def test_nan_tokens_accepted_in_requests():
    req = codecs.parse_infer_request(
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [NaN, 1]}]}'
    )
    assert np.isnan(req.inputs["x"][0])


def test_bf16_roundtrip_json_and_binary():
    arr = np.array([1.5, -2.25], dtype=ml_dtypes.bfloat16)
    t, _ = codecs.tensor_json("y", arr)
    assert t["datatype"] == "BF16" and json.loads(codecs.dumps(t))["data"] == [1.5, -2.25]
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "BF16",
                    "shape": [2],
                    "parameters": {"binary_data_size": 4},
                }
            ]
        }
    ).encode()
    req = codecs.parse_infer_request(head + arr.tobytes(), header_length=len(head))
    assert req.inputs["x"].dtype == ml_dtypes.bfloat16
    assert req.inputs["x"].astype(np.float32).tolist() == [1.5, -2.25]


def test_scalar_and_empty_tensors():
    req = codecs.parse_infer_request(
        json.dumps(
            {
                "inputs": [
                    {"name": "s", "datatype": "INT64", "shape": [], "data": 7},
                    {"name": "e", "datatype": "FP32", "shape": [0, 3], "data": []},
                ]
            }
        ).encode()
    )
    assert req.inputs["s"].shape == () and req.inputs["s"] == 7
    assert req.inputs["e"].shape == (0, 3) and req.inputs["e"].dtype == np.float32


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [{"name": "x", "datatype": "BOOL", "shape": [1], "data": [1]}]},
        {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": [1]}]},
        {"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [-1]}]},
        {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [2**70]}]},
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [None]}]},
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [True], "data": [1]}]},
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1] * 40, "data": [1]}]},
        {"inputs": [{"name": "", "datatype": "FP32", "shape": [1], "data": [1]}]},
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]},
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1],
                    "data": [1],
                    "parameters": {"binary_data_size": 4},
                }
            ]
        },
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": "y"},
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
            "parameters": {"timeout": -5},
        },
    ],
)
def test_invalid_requests(body):
    with pytest.raises(HTTPError) as e:
        codecs.parse_infer_request(json.dumps(body).encode())
    assert e.value.status == 400


def test_binary_input_is_zero_copy_and_exact():
    x = np.arange(6, dtype=np.float64)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP64",
                    "shape": [2, 3],
                    "parameters": {"binary_data_size": 48},
                }
            ]
        }
    ).encode()
    req = codecs.parse_infer_request(head + x.tobytes(), str(len(head)))
    np.testing.assert_array_equal(req.inputs["x"], x.reshape(2, 3))
