"""Hostile input through the one inference path, at every entry point: POST /v2 infer (JSON and
the binary extension), POST /api/v1/infer, an item of POST /api/v1/batch and a WebSocket message.

Every case must come back as a client error (400, or close 1007 for a WebSocket frame that is not
a request) with a message naming what was wrong — never a 500, a traceback or a server path —
and the server must answer a good request right after.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from tests.server import models
from tests.server.conftest import AppClient, make_config
from tests.server.helpers import X, binary_body, tensor, ws_exchange

pytestmark = pytest.mark.anyio

ENTRIES = ["v2", "v2-binary", "v1", "batch", "ws"]


def _t(data, shape=(1, 4), datatype="FP32", name="x"):
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": data}


def _deep(n):
    v = [1.0]
    for _ in range(n):
        v = [v]
    return v


# (id, request body: a dict, or raw bytes sent as the whole body / frame, needle in the error)
CASES = [
    ("malformed-json", b"{not json", "malformed JSON"),
    ("deeply-nested-body", b"[" * 100_000 + b"]" * 100_000, "JSON"),
    (
        "deeply-nested-data",
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": '
        + b"[" * 50_000
        + b"1"
        + b"]" * 50_000
        + b"}]}",
        "JSON",
    ),
    ("nested-500-data", {"inputs": [_t(_deep(500))]}, "data"),
    ("not-an-object", b'"just a string"', "JSON object"),
    ("empty-inputs", {"inputs": []}, "inputs"),
    ("inputs-not-a-list", {"inputs": {"x": 1}}, "inputs"),
    ("tensor-not-an-object", {"inputs": ["x"]}, "tensor object"),
    ("name-not-a-string", {"inputs": [{**_t([1, 2, 3, 4]), "name": 7}]}, "name"),
    ("unknown-datatype", {"inputs": [_t([1, 2, 3, 4], datatype="FP99")]}, "datatype"),
    ("datatype-null", {"inputs": [_t([1, 2, 3, 4], datatype=None)]}, "datatype"),
    ("wrong-datatype", {"inputs": [_t([1, 2, 3, 4], datatype="FP64")]}, "FP32 (tensor(float))"),
    (
        "int-for-float",
        {"inputs": [_t([1, 2, 3, 4], datatype="INT64")]},
        "got INT64 (tensor(int64))",
    ),
    ("data-shorter", {"inputs": [_t([1, 2, 3])]}, "needs 4"),
    ("data-longer", {"inputs": [_t([1, 2, 3, 4, 5])]}, "needs 4"),
    ("data-missing", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4]}]}, "data"),
    ("ragged-data", {"inputs": [_t([[1, 2], [3]])]}, "ragged"),
    ("strings-in-numbers", {"inputs": [_t(["a", "b", "c", "d"])]}, "numbers"),
    ("mixed-in-numbers", {"inputs": [_t([1, "2", None, 4])]}, "numbers"),
    ("booleans-in-numbers", {"inputs": [_t([True, False, True, False])]}, "numbers"),
    ("object-in-numbers", {"inputs": [_t([{"a": 1}, 2, 3, 4])]}, ""),
    ("negative-dim", {"inputs": [_t([1, 2, 3, 4], shape=(1, -4))]}, "out of range"),
    ("2^62-elements", {"inputs": [_t([1], shape=(2**31, 2**31))]}, "out of range"),
    ("2^62-one-dim", {"inputs": [_t([1], shape=(2**62,))]}, "out of range"),
    ("2^64-dim", {"inputs": [_t([1], shape=(2**64, 1))]}, "out of range"),
    ("zero-times-huge", {"inputs": [_t([], shape=(0, 2**62))]}, "out of range"),
    ("fractional-dim", {"inputs": [_t([1, 2, 3, 4], shape=(1, 4.5))]}, "integers"),
    ("nan-dim", {"inputs": [_t([1, 2, 3, 4], shape=(1, math.nan))]}, "integers"),
    ("rank-1000", {"inputs": [_t([1], shape=(1,) * 1000)]}, "rank"),
    ("shape-not-a-list", {"inputs": [_t([1, 2, 3, 4], shape=(4,)) | {"shape": "1x4"}]}, "shape"),
    ("wrong-rank", {"inputs": [_t([1, 2, 3, 4], shape=(4,))]}, "expects rank 2"),
    ("wrong-fixed-dim", {"inputs": [_t([1, 2, 3], shape=(1, 3))]}, "expects dim 1 = 4"),
    ("unknown-input", {"inputs": [_t([1, 2, 3, 4], name="q")]}, "no input(s) 'q'"),
    ("duplicate-input", {"inputs": [_t([1, 2, 3, 4]), _t([1, 2, 3, 4])]}, "twice"),
    ("unknown-output", {"inputs": [_t([1, 2, 3, 4])], "outputs": [{"name": "nope"}]}, "no output"),
    ("outputs-not-a-list", {"inputs": [_t([1, 2, 3, 4])], "outputs": "y"}, "outputs"),
    ("parameters-not-an-object", {"inputs": [_t([1, 2, 3, 4])], "parameters": [1]}, "parameters"),
    ("negative-timeout", {"inputs": [_t([1, 2, 3, 4])], "parameters": {"timeout": -1}}, "timeout"),
    (
        "binary-size-no-section",
        {"inputs": [_t(None) | {"parameters": {"binary_data_size": 16}}]},
        "",
    ),
    ("binary-size-negative", {"inputs": [_t(None) | {"parameters": {"binary_data_size": -5}}]}, ""),
]
for _c in CASES:  # "data": None is a placeholder: binary cases carry no data
    if isinstance(_c[1], dict):
        for _i in _c[1].get("inputs", []) if isinstance(_c[1].get("inputs"), list) else []:
            if isinstance(_i, dict) and _i.get("data", 0) is None:
                del _i["data"]


async def _send(c, entry, body, model="linear"):
    """(status, error message) of one request through ``entry``."""
    app = c._transport.app
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    if entry == "v2":
        r = await c.post(f"/v2/models/{model}/infer", content=raw)
    elif entry == "v2-binary":
        r = await c.post(
            f"/v2/models/{model}/infer",
            content=raw,
            headers={"inference-header-content-length": str(len(raw))},
        )
    elif entry == "v1":
        if isinstance(body, dict):
            raw = json.dumps({**body, "model": model}).encode()
        r = await c.post("/api/v1/infer", content=raw)
    elif entry == "batch":
        if isinstance(body, dict):
            raw = json.dumps({"model": model, "requests": [body]}).encode()
        r = await c.post("/api/v1/batch", content=raw)
        if r.status_code == 200:
            item = r.json()["results"][0]
            return item.get("status", 200), item.get("error", "")
    else:
        frame = raw.decode("latin-1")
        if isinstance(body, dict):
            frame = json.dumps({**body, "id": 1, "model": model})
        replies, code = await ws_exchange(app, [frame])
        if code is not None:
            return code, ""
        reply = json.loads(replies[0])
        return reply.get("status", 200), reply.get("error", "")
    _no_leaks(r.text)
    return r.status_code, (r.json().get("error", "") if r.status_code != 200 else "")


def _no_leaks(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text
    assert "/tmp/" not in text and "/work/" not in text and "site-packages" not in text


@pytest.mark.parametrize("entry", ENTRIES)
async def test_hostile_bodies_get_clear_client_errors(repo_dir, entry):
    async with AppClient(make_config(repo_dir)) as c:
        for case_id, body, needle in CASES:
            status, message = await _send(c, entry, body)
            if entry == "ws" and status == 1007:  # a frame that is not a request object
                assert isinstance(body, bytes), case_id
                continue
            assert status == 400, (entry, case_id, status, message)
            assert needle in message, (entry, case_id, needle, message)
            _no_leaks(message)
        status, _ = await _send(c, entry, {"inputs": [tensor("x", X)]})
        assert status == 200  # still serving


@pytest.mark.parametrize("entry", ENTRIES)
async def test_nan_and_inf_are_data_not_errors(repo_dir, entry):
    """Non-finite floats are valid FP32 data: they run and come back as NaN/Infinity tokens."""
    body = {"inputs": [_t([math.nan, math.inf, -math.inf, 1.0])], "outputs": [{"name": "y"}]}
    async with AppClient(make_config(repo_dir)) as c:
        status, message = await _send(c, entry, body)
        assert status == 200, message
        r = await c.post("/api/v1/infer", content=json.dumps({**body, "model": "linear"}))
        y = np.array(json.loads(r.text)["outputs"][0]["data"], dtype=np.float64)
        assert np.isnan(y).all()  # NaN * w + inf * w ... : every output is NaN, never null
        status, message = await _send(
            c, entry, {"inputs": [_t([math.nan, 1], (1, 2), "INT32")]}, "ints"
        )
        assert status == 400 and "integers" in message
        big = {"inputs": [_t([2**40, 1], (1, 2), "INT32")]}
        status, message = await _send(c, entry, big, "ints")
        assert status == 400 and "out of INT32's range" in message


def _binary(x=None, size=None, extra=b"", datatype="FP32", shape=(1, 4)):
    x = np.arange(4, dtype=np.float32).reshape(1, 4) if x is None else x
    blob = x.tobytes()
    head = {
        "inputs": [
            {
                "name": "x",
                "datatype": datatype,
                "shape": list(shape),
                "parameters": {"binary_data_size": len(blob) if size is None else size},
            }
        ]
    }
    return json.dumps(head).encode(), blob + extra


# (id, header json, binary section, needle)
LIES = [
    ("size-past-end", *_binary(size=64), "past the end"),
    ("size-short-of-shape", *_binary(size=8), "needs 16"),
    ("extra-bytes", *_binary(extra=b"xx"), "add up"),
    ("size-2^62", *_binary(size=2**62), "past the end"),
    ("shape-2^62", *_binary(shape=(2**31, 2**31)), "out of range"),
    ("shape-lies-about-size", *_binary(shape=(2, 4)), "needs 32"),
    ("fp64-shape-for-fp32-bytes", *_binary(datatype="FP64"), "needs 32"),
    ("bytes-overrun", *_binary(datatype="BYTES", shape=(2,)), "overruns"),
]


@pytest.mark.parametrize("entry", ["v2-binary", "v1-binary", "ws-binary"])
async def test_binary_sections_that_lie(repo_dir, entry):
    async with AppClient(make_config(repo_dir)) as c:
        app = c._transport.app
        for case_id, head, blob, needle in LIES:
            model = "strings" if "bytes" in case_id else "linear"
            if entry == "ws-binary":
                obj = json.loads(head) | {"id": 1, "model": model}
                h = json.dumps(obj).encode()
                replies, code = await ws_exchange(app, [struct.pack("<I", len(h)) + h + blob])
                assert code is None, case_id
                reply = json.loads(replies[0])
                status, message = reply.get("status", 200), reply.get("error", "")
            else:
                path = f"/v2/models/{model}/infer"
                if entry == "v1-binary":
                    head = json.dumps(json.loads(head) | {"model": model}).encode()
                    path = "/api/v1/infer"
                r = await c.post(
                    path,
                    content=head + blob,
                    headers={"inference-header-content-length": str(len(head))},
                )
                status, message = r.status_code, r.json().get("error", "")
            assert status == 400 and needle in message, (entry, case_id, status, message)


@pytest.mark.parametrize("entry", ["v2", "v1"])
async def test_header_lengths_that_lie(repo_dir, entry):
    x = np.array(X, np.float32)
    body, n = binary_body([("x", x, "FP32")])
    if entry == "v1":
        head = json.dumps(json.loads(body[:n]) | {"model": "linear"}).encode()
        body, n = head + body[n:], len(head)
    path = "/v2/models/linear/infer" if entry == "v2" else "/api/v1/infer"
    async with AppClient(make_config(repo_dir)) as c:
        for header in (str(n + 5000), "-1", "abc", "0", str(n - 3), "1e3", " ", str(2**64)):
            r = await c.post(
                path, content=body, headers={"inference-header-content-length": header}
            )
            assert r.status_code == 400, header
            assert (
                "Inference-Header-Content-Length" in r.json()["error"]
                or "JSON" in r.json()["error"]
            )
        r = await c.post(path, content=body, headers={"inference-header-content-length": str(n)})
        assert r.status_code == 200


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x01",
        b"\x00\x00\x00\x00{}",
        struct.pack("<I", 999) + b"{}",
        b"\xff\xff\xff\xff",
        "[1, 2]",
        "{",
        "null",
    ],
    ids=[
        "empty",
        "1-byte",
        "zero-length",
        "length-past-frame",
        "length-2^32-1",
        "array",
        "truncated",
        "null",
    ],
)
async def test_websocket_malformed_frames_close_1007(repo_dir, frame):
    async with AppClient(make_config(repo_dir)) as c:
        replies, code = await ws_exchange(c._transport.app, [frame])
        assert code == 1007 and replies == []


async def test_websocket_flood_every_message_answered(repo_dir):
    """2,000 messages on one connection (more than 100x its window): each answered exactly once,
    good ones with their own result, bad ones with their own 400."""
    async with AppClient(make_config(repo_dir, stream_max_in_flight=16)) as c:
        frames = []
        for i in range(2000):
            data = [i, 1, 2, 3] if i % 7 else [i, 1, 2]
            frames.append(
                json.dumps({"id": i, "model": "linear", "inputs": [_t(data, (1, len(data)))]})
            )
        replies, code = await ws_exchange(c._transport.app, frames)
        assert code is None and len(replies) == 2000
        by_id = {r["id"]: r for r in map(json.loads, replies)}
        assert sorted(by_id) == list(range(2000))
        for i, r in by_id.items():
            if i % 7:
                y, _ = models.linear_reference(np.array([[i, 1, 2, 3]], np.float32))
                np.testing.assert_allclose(r["outputs"][0]["data"], y.ravel(), rtol=1e-6)
            else:
                assert r["status"] == 400 and "expects dim 1 = 4" in r["error"]


async def test_websocket_message_over_the_limit_closes_1009(repo_dir):
    async with AppClient(make_config(repo_dir, max_body_mb=0.001)) as c:
        replies, code = await ws_exchange(c._transport.app, ["x" * 5000])
        assert code == 1009


@pytest.mark.parametrize("entry", ENTRIES)
async def test_memory_budget_refuses_up_front(tmp_path, entry):
    """A small input that asks for a huge output is refused before it runs (413), at every entry;
    a batch call whose items together exceed the budget is refused whole."""
    from onnx import TensorProto, helper

    repo = tmp_path / "r"
    repo.mkdir()
    # y[batch, 4096] = Expand(x[batch, 1]): 4 bytes in per row, 16 KiB out per row
    graph = helper.make_graph(
        [helper.make_node("Expand", ["x", "s"], ["y"])],
        "expand",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("s", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4096])],
    )
    import onnx

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(repo / "wide.onnx"))

    def body(rows):
        return {
            "inputs": [
                _t([0.5] * rows, (rows, 1)),
                _t([rows, 4096], (2,), "INT64", name="s"),
            ]
        }

    async with AppClient(make_config(repo, max_request_memory_mb=1)) as c:
        status, message = await _send(c, entry, body(8), "wide")  # 128 KiB of output: fine
        assert status == 200, message
        status, message = await _send(c, entry, body(256), "wide")  # 4 MiB of output
        if entry == "batch":  # a lone item over the budget: the whole call is refused
            r = await c.post("/api/v1/batch", json={"model": "wide", "requests": [body(256)]})
            status, message = r.status_code, r.json()["error"]
        assert status == 413 and "max_request_memory_mb" in message, (entry, message)
        assert "4.0 MiB" in message
        if entry == "batch":  # 40 items of 128 KiB: each fits, together they do not
            r = await c.post("/api/v1/batch", json={"model": "wide", "requests": [body(8)] * 40})
            assert r.status_code == 413 and "batch of 40 requests" in r.json()["error"]
