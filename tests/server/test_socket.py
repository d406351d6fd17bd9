"""Real-socket tests: stock tritonclient (binary and JSON), WebSocket streams, concurrent
requests with dynamic batching each checked against its own answer, and SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import signal
import struct
import threading
import time

import httpx
import numpy as np
import pytest

# Plain imports, not importorskip: these are dev dependencies, and a missing one must fail the
# run rather than silently drop the only tritonclient and real-socket WebSocket tests.
import tritonclient.http as tritonclient_http  # noqa: E402
import websockets.asyncio.client as websockets_client  # noqa: E402
from onnx import TensorProto, helper, numpy_helper
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

from tests.server import models
from tests.server.conftest import ServerProcess, build_repo


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = build_repo(tmp_path_factory.mktemp("sockrepo"))
    srv = ServerProcess(
        str(repo),
        "--max-batch-size",
        "16",
        "--max-queue-delay-us",
        "2000",
        "--no-access-log",
        "--stream-max-in-flight",
        "8",
        "--model-cache-size",
        "20",
        env={"ZIGGURAT_API_KEYS": "secret"},
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == 0


AUTH = {"Authorization": "Bearer secret"}


def auth() -> dict:
    return dict(AUTH)  # tritonclient adds its own headers to the dict it is given


def test_tritonclient_binary_and_json(server):
    tc = tritonclient_http
    from tritonclient.utils import InferenceServerException

    c = tc.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        assert c.is_server_live() and c.is_server_ready()
        assert c.is_model_ready("linear", headers=auth())
        meta = c.get_model_metadata("linear", headers=auth())
        assert meta["inputs"][0]["shape"] == [-1, 4]
        assert c.get_model_config("batched", headers=auth())["max_batch_size"] == 8
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        y, label = models.linear_reference(x)
        for binary in (True, False):
            inp = tc.InferInput("x", [2, 4], "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            outs = [
                tc.InferRequestedOutput("y", binary_data=binary),
                tc.InferRequestedOutput("label", binary_data=not binary),
            ]
            res = c.infer("linear", [inp], outputs=outs, headers=auth(), request_id="r7")
            np.testing.assert_allclose(res.as_numpy("y"), y, rtol=1e-6)
            assert res.as_numpy("label").tolist() == label.tolist()
            assert res.get_response()["id"] == "r7"
        # no outputs named: the server answers all outputs in binary
        inp = tc.InferInput("x", [2, 4], "FP32")
        inp.set_data_from_numpy(x)
        res = c.infer(
            "linear",
            [inp],
            headers=auth(),
            request_compression_algorithm="gzip",
            response_compression_algorithm="gzip",
        )
        assert res.as_numpy("label").tolist() == label.tolist()
        res = c.infer("versioned", [inp], model_version="1", headers=auth())
        assert res.get_response()["model_version"] == "1"
        # strings, binary and JSON
        s = np.array(["héllo", "", "wörld"], dtype=object)
        for binary in (True, False):
            inp = tc.InferInput("x", [3], "BYTES")
            inp.set_data_from_numpy(s, binary_data=binary)
            res = c.infer(
                "strings",
                [inp],
                headers=auth(),
                outputs=[tc.InferRequestedOutput("out", binary_data=binary)],
            )
            got = [v.decode() if isinstance(v, bytes) else v for v in res.as_numpy("out")]
            assert got == list(s)
        # classification
        inp = tc.InferInput("x", [2, 4], "FP32")
        inp.set_data_from_numpy(x)
        res = c.infer(
            "linear", [inp], headers=auth(), outputs=[tc.InferRequestedOutput("y", class_count=1)]
        )
        assert res.as_numpy("y").shape == (2, 1)
        # repository extension and statistics
        index = c.get_model_repository_index(headers=auth())
        assert any(r["name"] == "linear" and r["state"] == "READY" for r in index)
        c.unload_model("ints", headers=auth())
        assert not c.is_model_ready("ints", headers=auth())
        c.load_model("ints", headers=auth())
        assert c.is_model_ready("ints", headers=auth())
        stats = c.get_inference_statistics("linear", headers=auth())
        assert stats["model_stats"][0]["inference_stats"]["success"]["count"] >= 3
        with pytest.raises(InferenceServerException, match="unknown model"):
            c.infer("ghost", [inp], headers=auth())
        with pytest.raises(InferenceServerException, match="API key"):
            c.get_model_metadata("linear")
    finally:
        c.close()


def test_concurrent_requests_batched_each_gets_its_own_answer(server):
    """N concurrent requests with dynamic batching on: each answer matches its own input."""
    n = 48
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((int(rng.integers(1, 4)), 4)).astype(np.float32) for _ in range(n)]
    results: list = [None] * n

    async def main():
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as c:

            async def one(i):
                body = {
                    "id": str(i),
                    "inputs": [
                        {
                            "name": "x",
                            "datatype": "FP32",
                            "shape": list(xs[i].shape),
                            "data": xs[i].ravel().tolist(),
                        }
                    ],
                }
                results[i] = (await c.post("/v2/models/batched/infer", json=body)).json()

            await asyncio.gather(*(one(i) for i in range(n)))
            return (await c.get("/api/v1/stats")).json()

    stats = asyncio.run(main())
    for i, res in enumerate(results):
        assert res["id"] == str(i)
        y, label = models.linear_reference(xs[i])
        out = {o["name"]: o for o in res["outputs"]}
        assert out["y"]["shape"] == [len(xs[i]), 3]
        np.testing.assert_allclose(np.array(out["y"]["data"]).reshape(-1, 3), y, rtol=1e-5)
        assert out["label"]["data"] == label.tolist()
    b = next(m for m in stats["models"] if m["name"] == "batched")
    assert b["requests"] >= n
    assert b["executions"] < b["requests"]  # some requests really were stacked
    assert max(int(k) for k in b["batch_sizes"]) > 1


def test_row_mixing_model_is_never_batched_wrong(server):
    """ReduceSum over the batch looks batchable but mixes rows: answers stay per request."""
    xs = [np.full((1, 2), i, np.float32) for i in range(12)]

    async def main():
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as c:
            return await asyncio.gather(
                *(
                    c.post(
                        "/v2/models/rowsum/infer",
                        json={
                            "inputs": [
                                {
                                    "name": "x",
                                    "datatype": "FP32",
                                    "shape": [1, 2],
                                    "data": x.ravel().tolist(),
                                }
                            ]
                        },
                    )
                    for x in xs
                )
            )

    for i, r in enumerate(asyncio.run(main())):
        assert r.json()["outputs"][0]["data"] == [2.0 * i]


def _ws_url(server, path="/api/v1/stream", key="secret"):
    url = server.url.replace("http", "ws") + path
    return f"{url}?api_key={key}" if key else url


def test_websocket_many_in_flight(server):
    n = 40
    xs = [np.full((1, 4), i, np.float32) for i in range(n)]

    async def main():
        async with websockets_client.connect(_ws_url(server)) as ws:

            async def sender():
                for i in range(n):
                    if i % 2:
                        msg = {
                            "id": i,
                            "model": "linear",
                            "inputs": [
                                {
                                    "name": "x",
                                    "datatype": "FP32",
                                    "shape": [1, 4],
                                    "data": xs[i].ravel().tolist(),
                                }
                            ],
                        }
                        await ws.send(json.dumps(msg))
                    else:  # binary frame: length-prefixed JSON header + raw tensor bytes
                        head = json.dumps(
                            {
                                "id": i,
                                "model": "linear",
                                "inputs": [
                                    {
                                        "name": "x",
                                        "datatype": "FP32",
                                        "shape": [1, 4],
                                        "parameters": {"binary_data_size": 16},
                                    }
                                ],
                                "parameters": {"binary_data_output": True},
                            }
                        ).encode()
                        await ws.send(struct.pack("<I", len(head)) + head + xs[i].tobytes())
                bad = {
                    "id": "bad",
                    "model": "linear",
                    "inputs": [
                        {"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}
                    ],
                }
                await ws.send(json.dumps(bad))

            send_task = asyncio.create_task(sender())
            replies = {}
            while len(replies) < n + 1:
                msg = await asyncio.wait_for(ws.recv(), 20)
                if isinstance(msg, bytes):
                    (hl,) = struct.unpack_from("<I", msg)
                    head = json.loads(msg[4 : 4 + hl])
                    y = np.frombuffer(msg[4 + hl : 4 + hl + 12], np.float32)
                    replies[head["id"]] = y
                else:
                    obj = json.loads(msg)
                    replies[obj["id"]] = obj
            await send_task
            return replies

    replies = asyncio.run(main())
    assert replies["bad"]["status"] == 400
    for i in range(n):
        y, _ = models.linear_reference(xs[i])
        got = replies[i] if i % 2 == 0 else np.array(replies[i]["outputs"][0]["data"])
        np.testing.assert_allclose(got, y.ravel(), rtol=1e-6)


def test_websocket_protocol_errors_close_cleanly(server):
    async def close_code(url, payload):
        async with websockets_client.connect(url) as ws:
            await ws.send(payload)
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed:
                pass
            await asyncio.wait_for(ws.wait_closed(), 10)
            return ws.close_code

    async def main():
        assert await close_code(_ws_url(server), "{not json") == 1007
        assert await close_code(_ws_url(server), b"\x01") == 1007
        assert await close_code(_ws_url(server), struct.pack("<I", 999) + b"{}") == 1007
        assert await close_code(_ws_url(server), "[1, 2]") == 1007
        with pytest.raises(InvalidStatus):
            async with websockets_client.connect(_ws_url(server, key=None)) as ws:
                await ws.recv()
        # the server is still fine
        async with websockets_client.connect(_ws_url(server)) as ws:
            await ws.send(
                json.dumps(
                    {
                        "id": "ok",
                        "model": "linear",
                        "inputs": [
                            {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
                        ],
                    }
                )
            )
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

    assert asyncio.run(main())["id"] == "ok"


def _heavy_model(path):
    """x [batch, 8] -> four 1024x1024 MatMuls -> ReduceSum: a few ms per row on one core."""
    rng = np.random.default_rng(0)
    w0 = numpy_helper.from_array(rng.standard_normal((8, 1024)).astype(np.float32) * 0.1, "w0")
    w = numpy_helper.from_array(rng.standard_normal((1024, 1024)).astype(np.float32) * 0.03, "w")
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"])]
    for i in range(4):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("ReduceSum", ["h4"], ["s"], keepdims=1))
    graph = helper.make_graph(
        nodes,
        "heavy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 8])],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 1])],
        [w0, w],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    import onnx

    onnx.save(m, str(path))
    return path


def test_sigterm_drains_in_flight_requests(tmp_path):
    model = _heavy_model(tmp_path / "heavy.onnx")
    srv = ServerProcess(str(model), "--no-access-log", "--inline-run-us", "0")
    try:
        srv.wait_ready()
        x = np.ones((256, 8), np.float32)
        body = {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [256, 8], "data": x.ravel().tolist()}
            ]
        }
        httpx.post(srv.url + "/v2/models/heavy/infer", json=body, timeout=30)  # warm up
        statuses: list[int] = []

        def worker():
            r = httpx.post(srv.url + "/v2/models/heavy/infer", json=body, timeout=60)
            statuses.append(r.status_code)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        # SIGTERM only once each of the four is in flight or answered (a request not yet
        # accepted would rightly be refused). ``done`` is read before the stats: a request
        # answered by then is no longer in flight, so none is counted twice; the stats request
        # itself is one of ``in_flight``.
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "the four requests never got in flight"
            done = len(statuses)
            stats = httpx.get(srv.url + "/api/v1/stats", timeout=5).json()
            if stats["in_flight"] - 1 + done >= 4:
                break
            time.sleep(0.005)
        srv.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert statuses == [200] * 4
        assert srv.proc.wait(30) == 0
        with pytest.raises(httpx.HTTPError):
            httpx.get(srv.url + "/v2/health/live", timeout=2)
    finally:
        srv.stop()
