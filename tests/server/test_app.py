"""In-process tests of every endpoint and error (httpx against the ASGI app, no sockets)."""

from __future__ import annotations

import asyncio
import json
import struct
import time

import numpy as np
import pytest

from tests.server import models
from tests.server.conftest import AppClient, make_config
from ziggurat.server.model import ziggurat_session

pytestmark = pytest.mark.anyio

X = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, 0.0]]


def tensor(name, data, datatype="FP32", shape=None):
    arr = np.asarray(data)
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(shape or arr.shape),
        "data": arr.ravel().tolist(),
    }


async def test_health_and_server_metadata(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        assert (await c.get("/v2/health/live")).status_code == 200
        assert (await c.get("/v2/health/ready")).status_code == 200
        h = (await c.get("/api/v1/health")).json()
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
        assert (await c.get("/v2/models/linear/ready")).status_code == 200
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


def binary_body(inputs, outputs=None, binary_output=True):
    """Build a V2 binary-extension body: (body, json length)."""
    head = {"inputs": [], "parameters": {"binary_data_output": binary_output}}
    blobs = []
    for name, arr, datatype in inputs:
        if datatype == "BYTES":
            blob = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in arr.ravel())
        else:
            blob = arr.tobytes()
        head["inputs"].append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(arr.shape),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    if outputs:
        head["outputs"] = outputs
    js = json.dumps(head).encode()
    return js + b"".join(blobs), len(js)


def parse_binary_response(r):
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:n])
    pos, out = n, {}
    for o in head["outputs"]:
        if "data" in o:
            out[o["name"]] = (o, None)
            continue
        size = o["parameters"]["binary_data_size"]
        out[o["name"]] = (o, r.content[pos : pos + size])
        pos += size
    assert pos == len(r.content)
    return head, out


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


async def test_v1_infer_batch_models_stats(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        r = await c.post(
            "/api/v1/infer",
            json={"model": "linear", "inputs": [tensor("x", X)], "outputs": ["label"]},
        )
        assert r.status_code == 200 and r.json()["outputs"][0]["name"] == "label"
        r = await c.post(
            "/api/v1/infer", json={"model": "versioned", "version": 1, "inputs": [tensor("x", X)]}
        )
        assert r.json()["model_version"] == "1"
        items = [{"id": f"i{i}", "inputs": [tensor("x", [[i, 1, 2, 3]])]} for i in range(5)]
        items.insert(2, {"id": "bad", "inputs": [tensor("x", [[1, 2, 3]])]})
        r = await c.post("/api/v1/batch", json={"model": "linear", "requests": items})
        res = r.json()["results"]
        assert r.status_code == 200 and len(res) == 6
        assert res[2]["id"] == "bad" and res[2]["status"] == 400 and "dimension" in res[2]["error"]
        for item in res[:2] + res[3:]:
            i = int(item["id"][1:])
            y, label = models.linear_reference(np.array([[i, 1, 2, 3]], np.float32))
            assert item["outputs"][1]["data"] == label.tolist()
            np.testing.assert_allclose(item["outputs"][0]["data"], y.ravel(), rtol=1e-6)
        listing = (await c.get("/api/v1/models")).json()["models"]
        lin = next(m for m in listing if m["name"] == "linear")
        assert lin["state"] == "READY" and lin["stats"]["requests"] >= 1
        assert lin["batching"]["batch_axis"] is True
        assert next(m for m in listing if m["name"] == "corrupt")["state"] == "UNAVAILABLE"
        stats = (await c.get("/api/v1/stats")).json()
        assert stats["requests"] >= 3 and stats["memory"]["rss_bytes"] > 0
        lstats = next(m for m in stats["models"] if m["name"] == "linear")
        assert lstats["latency"]["p50_ms"] is not None
        v2stats = (await c.get("/v2/models/linear/stats")).json()["model_stats"][0]
        assert v2stats["inference_stats"]["success"]["count"] >= 1
        assert (await c.get("/v2/models/stats")).status_code == 200


async def test_metrics_openapi_docs(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        await c.post("/v2/models/linear/infer", json={"inputs": [tensor("x", X)]})
        text = (await c.get("/metrics")).text
        for name in (
            "ziggurat_requests_total",
            "ziggurat_request_duration_seconds_bucket",
            "ziggurat_queue_duration_seconds",
            "ziggurat_batch_size_bucket",
            "ziggurat_models_loaded",
            "process_resident_memory_bytes",
        ):
            assert name in text
        assert 'route="v2_infer",model="linear",status="200"' in text
        spec = (await c.get("/openapi.json")).json()
        assert spec["openapi"].startswith("3.") and "/v2/models/{model}/infer" in spec["paths"]
        assert "swagger" in (await c.get("/docs")).text.lower()


async def test_repository_load_unload_index(repo_dir):
    async with AppClient(make_config(repo_dir, load_on_demand=False)) as c:
        index = (await c.post("/v2/repository/index")).json()
        assert {"name": "linear", "version": "1", "state": "READY", "reason": ""} in index
        assert (await c.post("/v2/repository/models/linear/unload")).status_code == 200
        assert (await c.get("/v2/models/linear/ready")).status_code == 400
        r = await c.post("/v2/models/linear/infer", json={"inputs": [tensor("x", X)]})
        assert r.status_code == 400 and "unloaded" in r.json()["error"]
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


async def test_load_errors_and_traversal(repo_dir, tmp_path):
    outside = tmp_path / "outside.onnx"
    models.linear(outside)
    link = repo_dir / "escape.onnx"
    if not link.exists():
        link.symlink_to(outside)
    try:
        async with AppClient(make_config(repo_dir)) as c:
            r = await c.post("/api/v1/models/load", json={"model": "corrupt"})
            assert r.status_code == 400 and "not a valid ONNX model" in r.json()["error"]
            for bad in ("../linear", "a/b", "..", ".hidden", "x" * 200):
                r = await c.post("/api/v1/models/load", json={"model": bad})
                assert r.status_code == 400, bad
            r = await c.post("/api/v1/models/load", json={"model": "escape"})
            assert r.status_code == 400 and "outside" in r.json()["error"]
            r = await c.post("/v2/repository/models/..%2Fetc/load")
            assert r.status_code in (400, 404)
            assert (await c.post("/api/v1/models/load", json={"nope": 1})).status_code == 400
    finally:
        link.unlink()


async def test_hot_reload_keeps_old_until_ready_and_on_failure(tmp_path):
    repo = tmp_path / "repo"
    models.linear(repo / "m.onnx")
    body = {"inputs": [tensor("x", X[:1])]}
    async with AppClient(make_config(repo)) as c:
        before = (await c.post("/v2/models/m/infer", json=body)).json()["outputs"][0]["data"]
        (repo / "m.onnx").write_bytes(b"broken")
        r = await c.post("/api/v1/models/load", json={"model": "m"})
        assert r.status_code == 400
        after = (await c.post("/v2/models/m/infer", json=body)).json()["outputs"][0]["data"]
        assert after == before  # the failed reload kept the old version
        models.linear(repo / "m.onnx", scale=3.0)
        assert (await c.post("/api/v1/models/load", json={"model": "m"})).status_code == 200
        new = (await c.post("/v2/models/m/infer", json=body)).json()["outputs"][0]["data"]
        assert new != before


async def test_lru_eviction_and_size_limit(tmp_path):
    repo = tmp_path / "repo"
    for name in ("a", "b", "c"):
        models.linear(repo / f"{name}.onnx")
    models.linear(repo / "big.onnx", in_dim=300_000, out_dim=1)  # ~1.2 MB of weights
    async with AppClient(make_config(repo, model_cache_size=2, max_model_size_mb=1)) as c:
        for name in ("a", "b", "c"):
            r = await c.post(f"/v2/models/{name}/infer", json={"inputs": [tensor("x", X)]})
            assert r.status_code == 200
        loaded = {
            row["name"]
            for row in (await c.post("/v2/repository/index")).json()
            if row["state"] == "READY"
        }
        assert len(loaded) == 2 and "c" in loaded
        r = await c.post("/api/v1/models/load", json={"model": "big"})
        assert r.status_code == 400 and "max_model_size_mb" in r.json()["error"]


BAD_BODIES = [
    (b"{not json", "malformed JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    (b'"just a string"', "JSON object"),
    (b'{"inputs": []}', "inputs"),
    (
        b'{"inputs": [{"name": "x", "datatype": "FP99", "shape": [1, 4], "data": [1,2,3,4]}]}',
        "datatype",
    ),
    (
        b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], "data": [1,2,3,4]}]}',
        "FP32, got FP64",
    ),
    (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1,2,3]}]}',
        "needs 4",
    ),
    (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, -4], "data": [1,2,3,4]}]}',
        "out of range",
    ),
    (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [99999999999, 99999999999],'
        b' "data": [1]}]}',
        "out of range",
    ),
    (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": ["a","b","c","d"]}]}',
        "numbers",
    ),
    (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [[1,2],[3]]}]}',
        "ragged",
    ),
    (
        b'{"inputs": [{"name": "q", "datatype": "FP32", "shape": [1, 4], "data": [1,2,3,4]}]}',
        "no input",
    ),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "data": [1,2,3,4]}]}', "rank"),
    (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1,2,3,4]}],'
        b' "outputs": [{"name": "nope"}]}',
        "no output",
    ),
    (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1,2,3,4]},'
        b' {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1,2,3,4]}]}',
        "twice",
    ),
]


async def test_bad_inputs_get_clear_400s(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        for body, needle in BAD_BODIES:
            r = await c.post(
                "/v2/models/linear/infer",
                content=body,
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 400, (body[:80], r.text)
            assert needle in r.json()["error"], (needle, r.json())
        r = await c.post(
            "/v2/models/ints/infer",
            json={"inputs": [tensor("x", [[1.5, 2], [3, 4]], "INT32", [2, 2])]},
        )
        assert r.status_code == 400 and "integers" in r.json()["error"]
        r = await c.post(
            "/v2/models/ints/infer",
            json={"inputs": [tensor("x", [[2**40, 2], [3, 4]], "INT32", [2, 2])]},
        )
        assert r.status_code == 400 and "range" in r.json()["error"]
        # still serving
        r = await c.post("/v2/models/linear/infer", json={"inputs": [tensor("x", X)]})
        assert r.status_code == 200


async def test_binary_headers_that_lie(repo_dir):
    x = np.array(X, np.float32)
    async with AppClient(make_config(repo_dir)) as c:
        body, n = binary_body([("x", x, "FP32")])
        for header in (str(n + 5000), "-1", "abc", "0", str(n - 3)):
            r = await c.post(
                "/v2/models/linear/infer",
                content=body,
                headers={"Inference-Header-Content-Length": header},
            )
            assert r.status_code == 400, header
        r = await c.post(
            "/v2/models/linear/infer",
            content=body + b"xx",
            headers={"Inference-Header-Content-Length": str(n)},
        )
        assert r.status_code == 400 and "add up" in r.json()["error"]
        r = await c.post(
            "/v2/models/linear/infer",
            content=body[:-4],
            headers={"Inference-Header-Content-Length": str(n)},
        )
        assert r.status_code == 400 and "past the end" in r.json()["error"]
        head = json.loads(body[:n])
        head["inputs"][0]["parameters"]["binary_data_size"] = 16
        js = json.dumps(head).encode()
        r = await c.post(
            "/v2/models/linear/infer",
            content=js + x.tobytes()[:16],
            headers={"Inference-Header-Content-Length": str(len(js))},
        )
        assert r.status_code == 400 and "needs 32" in r.json()["error"]
        bad = json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "BYTES",
                        "shape": [2],
                        "parameters": {"binary_data_size": 8},
                    }
                ]
            }
        ).encode()
        blob = struct.pack("<I", 100) + b"abcd"
        r = await c.post(
            "/v2/models/strings/infer",
            content=bad + blob,
            headers={"Inference-Header-Content-Length": str(len(bad))},
        )
        assert r.status_code == 400 and "overruns" in r.json()["error"]


async def test_body_limit_and_compression(repo_dir):
    import gzip

    async with AppClient(make_config(repo_dir, max_body_mb=0.001)) as c:
        big = b'{"inputs": [' + b" " * 5000 + b"]}"
        r = await c.post("/v2/models/linear/infer", content=big)
        assert r.status_code == 413
        bomb = gzip.compress(b" " * 10_000_000)
        r = await c.post(
            "/v2/models/linear/infer", content=bomb, headers={"content-encoding": "gzip"}
        )
        assert r.status_code == 413
    async with AppClient(make_config(repo_dir)) as c:
        body = json.dumps({"inputs": [tensor("x", X)]}).encode()
        r = await c.post(
            "/v2/models/linear/infer",
            content=gzip.compress(body),
            headers={"content-encoding": "gzip", "accept-encoding": "gzip"},
        )
        assert r.status_code == 200 and r.json()["outputs"][1]["data"] == [2, 2]
        r = await c.post(
            "/v2/models/linear/infer", content=b"garbage", headers={"content-encoding": "gzip"}
        )
        assert r.status_code == 400


async def test_routes_404_405(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        assert (await c.get("/nope")).status_code == 404
        r = await c.get("/v2/models/linear/infer")
        assert r.status_code == 405 and r.headers["allow"] == "POST"


async def test_api_keys(repo_dir):
    async with AppClient(make_config(repo_dir, api_keys=("k1", "k2"))) as c:
        assert (await c.get("/v2/health/ready")).status_code == 200
        assert (await c.get("/api/v1/health")).status_code == 200
        r = await c.get("/v2/models/linear")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/v2/models/linear", headers={"x-api-key": "bad"})).status_code == 403
        ok = await c.get("/v2/models/linear", headers={"authorization": "Bearer k2"})
        assert ok.status_code == 200
        assert (await c.get("/v2/models/linear", headers={"x-api-key": "k1"})).status_code == 200


async def test_cors_and_request_id(repo_dir):
    cfg = make_config(repo_dir, cors_origins=("https://app.example",), cors_allow_credentials=True)
    async with AppClient(cfg) as c:
        r = await c.options(
            "/v2/models/linear/infer",
            headers={"origin": "https://app.example", "access-control-request-method": "POST"},
        )
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert r.headers["access-control-allow-credentials"] == "true"
        r = await c.get("/v2", headers={"origin": "https://app.example", "x-request-id": "abc-1"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert r.headers["x-request-id"] == "abc-1"
        r = await c.get("/v2", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        r = await c.options(
            "/v2",
            headers={"origin": "https://evil.example", "access-control-request-method": "GET"},
        )
        assert r.status_code == 403
        r = await c.get("/v2", headers={"x-request-id": "bad id with spaces"})
        assert r.headers["x-request-id"] != "bad id with spaces"


async def test_max_connections_503(repo_dir):
    async with AppClient(make_config(repo_dir, max_connections=2)) as c:
        c._transport.app.metrics.in_flight = 2  # as if two requests were running
        r = await c.get("/v2/models/linear")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert (await c.get("/v2/health/ready")).status_code == 200  # health is never refused
        c._transport.app.metrics.in_flight = 0


def slow_factory(delay: float):
    class Slow:
        def __init__(self, inner):
            self.inner = inner

        def get_inputs(self):
            return self.inner.get_inputs()

        def get_outputs(self):
            return self.inner.get_outputs()

        def run(self, names, feeds):
            time.sleep(delay)
            return self.inner.run(names, feeds)

    return lambda path, settings: Slow(ziggurat_session(path, settings))


async def test_timeout_504_and_work_abandoned(repo_dir, tmp_path):
    import httpx

    from ziggurat.server import create_app

    repo = tmp_path / "r"
    models.linear(repo / "linear.onnx")
    app = create_app(
        make_config(repo, request_timeout_ms=100, inline_run_us=0),
        session_factory=slow_factory(0.3),
    )
    await app.startup(wait=True)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            body = {"inputs": [tensor("x", X)]}
            rs = await asyncio.gather(
                *(c.post("/v2/models/linear/infer", json=body) for _ in range(5))
            )
            assert [r.status_code for r in rs] == [504] * 5
            assert "timed out" in rs[0].json()["error"]
            m = app.repo.entries["linear"].versions[1]
            await asyncio.sleep(0.4)
            # one run was already executing; the four queued behind it were dropped, not run
            assert m.stats.executions <= 2 and m.scheduler.pending == 0
            r = await c.post(
                "/v2/models/linear/infer", json={**body, "parameters": {"timeout": 1000}}
            )
            assert r.status_code == 504
    finally:
        await app.shutdown()


async def test_inference_never_blocks_health(tmp_path):
    import httpx

    from ziggurat.server import create_app

    models.linear(tmp_path / "r" / "linear.onnx")
    app = create_app(
        make_config(tmp_path / "r", inline_run_us=0), session_factory=slow_factory(0.5)
    )
    await app.startup(wait=True)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            slow = asyncio.ensure_future(
                c.post("/v2/models/linear/infer", json={"inputs": [tensor("x", X)]})
            )
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            assert (await c.get("/v2/health/ready")).status_code == 200
            assert (await c.get("/api/v1/health")).status_code == 200
            assert time.perf_counter() - t0 < 0.3
            assert not slow.done()
            assert (await slow).status_code == 200
    finally:
        await app.shutdown()


async def test_stream_backpressure_bounds_in_flight(tmp_path):
    """With stream_max_in_flight=3 the server stops reading the socket at 3 running requests."""
    from ziggurat.server import create_app

    models.linear(tmp_path / "r" / "linear.onnx")
    app = create_app(
        make_config(tmp_path / "r", inline_run_us=0, stream_max_in_flight=3),
        session_factory=slow_factory(0.2),
    )
    await app.startup(wait=True)
    msg = json.dumps({"id": 0, "model": "linear", "inputs": [tensor("x", X)]})
    inbox: asyncio.Queue = asyncio.Queue()
    for i in range(10):
        inbox.put_nowait(
            {"type": "websocket.receive", "text": msg.replace('"id": 0', f'"id": {i}')}
        )
    reads, sent = [], []

    async def receive():
        if not reads:
            reads.append("connect")
            return {"type": "websocket.connect"}
        item = await inbox.get()
        reads.append(item["type"])
        return item

    async def send(m):
        sent.append(m)

    scope = {"type": "websocket", "path": "/api/v1/stream", "headers": [], "query_string": b""}
    task = asyncio.ensure_future(app.stream.handle(scope, receive, send))
    try:
        await asyncio.sleep(0.1)
        assert len(reads) == 1 + 3  # connect + three requests, then reading paused
        while sum(m["type"] == "websocket.send" for m in sent) < 10:
            await asyncio.sleep(0.05)
        ids = sorted(json.loads(m["text"])["id"] for m in sent if m["type"] == "websocket.send")
        assert ids == list(range(10))
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(task, 5)
    finally:
        task.cancel()
        await app.shutdown()
