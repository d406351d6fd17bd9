"""KServe V2 routes in-process: health, metadata, config, infer (JSON, binary, classification),
repository extension."""

from __future__ import annotations

import os
import socket
import struct

import numpy as np
import pytest

from tests.server import models
from tests.server.conftest import AppClient, make_config
from tests.server.helpers import X, binary_body, parse_binary_response, tensor

pytestmark = pytest.mark.anyio


async def test_health_and_server_metadata(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        # Open Inference Protocol bodies (KServe's client parses them) with Triton's codes.
        r = await c.get("/v2/health/live")
        assert (r.status_code, r.json()) == (200, {"live": True})
        r = await c.get("/v2/health/ready")
        assert (r.status_code, r.json()) == (200, {"ready": True})
        h = (await c.get("/api/v1/health")).json()
        assert h["replica"] == f"{socket.gethostname()}:{os.getpid()}"
        assert h["ready"] and h["live"] and h["status"] == "degraded"  # corrupt.onnx failed
        assert any("corrupt" in e for e in h["errors"])
        meta = (await c.get("/v2")).json()
        assert meta["name"] == "ziggurat" and "binary_tensor_data" in meta["extensions"]


async def test_v2_model_metadata_config_ready(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        meta = (await c.get("/v2/models/linear")).json()
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
        assert [o["name"] for o in meta["outputs"]] == ["y", "label"]
        assert (await c.get("/v2/models/versioned/versions/1")).json()["versions"] == ["1"]
        r = await c.get("/v2/models/linear/ready")
        assert (r.status_code, r.json()) == (200, {"name": "linear", "ready": True})
        assert (await c.get("/v2/models/linear/versions/1/ready")).status_code == 200
        cfg = (await c.get("/v2/models/batched/config")).json()
        assert cfg["max_batch_size"] == 8 and cfg["input"][0]["dims"] == [4]
        assert (await c.get("/v2/models/nope")).status_code == 404
        assert (await c.get("/v2/models/nope/ready")).status_code == 404
        r = await c.get("/v2/models/linear/versions/7")
        assert r.status_code == 404 and "version" in r.json()["error"]
        assert (await c.get("/v2/models/linear/versions/x1")).status_code == 400


async def test_v2_infer_json(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        r = await c.post("/v2/models/linear/infer", json={"id": "r1", "inputs": [tensor("x", X)]})
        assert r.status_code == 200, r.text
        body = r.json()
        y, label = models.linear_reference(np.array(X, np.float32))
        assert body["id"] == "r1" and body["model_name"] == "linear"
        out = {o["name"]: o for o in body["outputs"]}
        np.testing.assert_allclose(np.array(out["y"]["data"]).reshape(2, 3), y, rtol=1e-6)
        assert out["label"]["data"] == label.tolist() and out["label"]["datatype"] == "INT64"
        # nested data, output subset
        t = {"name": "x", "datatype": "FP32", "shape": [2, 4], "data": X}
        r = await c.post(
            "/v2/models/linear/infer", json={"inputs": [t], "outputs": [{"name": "label"}]}
        )
        assert [o["name"] for o in r.json()["outputs"]] == ["label"]
        assert r.headers["x-request-id"]


async def test_versions_default_to_latest(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        body = {"inputs": [tensor("x", X[:1])]}
        v2 = (await c.post("/v2/models/versioned/infer", json=body)).json()
        v1 = (await c.post("/v2/models/versioned/versions/1/infer", json=body)).json()
        assert v2["model_version"] == "2" and v1["model_version"] == "1"
        assert v2["outputs"][0]["data"] != v1["outputs"][0]["data"]


@pytest.mark.parametrize(
    "model,datatype,data,shape",
    [
        ("strings", "BYTES", ["héllo", "", "x"], [3]),
        ("ints", "INT32", [[1, -2], [3, 2**31 - 1]], [2, 2]),
        ("halfs", "FP16", [1.5, -2.0], [2]),
        ("flags", "BOOL", [True, False, True], [3]),
    ],
)
async def test_datatypes_roundtrip_json(repo_dir, model, datatype, data, shape):
    async with AppClient(make_config(repo_dir)) as c:
        r = await c.post(
            f"/v2/models/{model}/infer", json={"inputs": [tensor("x", data, datatype, shape)]}
        )
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["datatype"] == datatype and out["shape"] == shape
        assert out["data"] == np.asarray(data).ravel().tolist()


async def test_v2_binary_extension(repo_dir):
    x = np.array(X, np.float32)
    async with AppClient(make_config(repo_dir)) as c:
        body, n = binary_body([("x", x, "FP32")])
        r = await c.post(
            "/v2/models/linear/infer",
            content=body,
            headers={"Inference-Header-Content-Length": str(n)},
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/octet-stream"
        _, out = parse_binary_response(r)
        y, label = models.linear_reference(x)
        np.testing.assert_allclose(np.frombuffer(out["y"][1], np.float32).reshape(2, 3), y)
        assert np.frombuffer(out["label"][1], np.int64).tolist() == label.tolist()
        # mixed: one output binary, one JSON
        body, n = binary_body(
            [("x", x, "FP32")],
            outputs=[
                {"name": "y", "parameters": {"binary_data": False}},
                {"name": "label", "parameters": {"binary_data": True}},
            ],
            binary_output=False,
        )
        r = await c.post(
            "/v2/models/linear/infer",
            content=body,
            headers={"Inference-Header-Content-Length": str(n)},
        )
        head, out = parse_binary_response(r)
        assert "data" in head["outputs"][0] and set(out) == {"y", "label"}
        # BYTES in binary form
        s = np.array(["a", "bc", "ünï"], dtype=object)
        body, n = binary_body([("x", s, "BYTES")])
        r = await c.post(
            "/v2/models/strings/infer",
            content=body,
            headers={"Inference-Header-Content-Length": str(n)},
        )
        _, out = parse_binary_response(r)
        assert out["out"][1] == b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in s)


async def test_classification_extension(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        r = await c.post(
            "/v2/models/linear/infer",
            json={
                "inputs": [tensor("x", X[:1])],
                "outputs": [{"name": "y", "parameters": {"classification": 2}}],
            },
        )
        out = r.json()["outputs"][0]
        assert out["datatype"] == "BYTES" and out["shape"] == [1, 2]
        assert out["data"][0].endswith(":2") and out["data"][1].endswith(":1")


async def test_repository_load_unload_index(repo_dir):
    async with AppClient(make_config(repo_dir, load_on_demand=False)) as c:
        index = (await c.post("/v2/repository/index")).json()
        assert {"name": "linear", "version": "1", "state": "READY", "reason": ""} in index
        assert (await c.post("/v2/repository/models/linear/unload")).status_code == 200
        r = await c.get("/v2/models/linear/ready")
        assert r.status_code == 400 and r.json()["ready"] is False
        r = await c.post("/v2/models/linear/infer", json={"inputs": [tensor("x", X)]})
        assert r.status_code == 503 and "unloaded" in r.json()["error"]
        ready_only = (await c.post("/v2/repository/index", json={"ready": True})).json()
        assert all(row["state"] == "READY" for row in ready_only)
        assert (await c.post("/v2/repository/models/linear/load")).status_code == 200
        assert (await c.get("/v2/models/linear/ready")).status_code == 200
        r = await c.post("/api/v1/models/unload", json={"model": "linear"})
        assert r.json()["state"] == "UNAVAILABLE"
        r = await c.post("/api/v1/models/load", json={"model": "versioned", "version": "1"})
        assert r.status_code == 200 and r.json()["version"] == "1"
        r = await c.post("/v2/repository/models/linear/load", json={"parameters": {"config": "{}"}})
        assert r.status_code == 400
        assert (await c.post("/v2/repository/models/ghost/load")).status_code == 404
