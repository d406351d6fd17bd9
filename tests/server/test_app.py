"""The ASGI app itself: max_connections (503), request timeouts (504, abandoned work dropped),
inference off the event loop, errors mapped to statuses (500 only for bugs, with the request id)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.server import models
from tests.server.conftest import AppClient, make_config
from tests.server.helpers import Gate, Wrapped, X, tensor
from ziggurat.server import create_app
from ziggurat.server.model import ziggurat_session

pytestmark = pytest.mark.anyio


async def _until(cond, timeout=10.0):
    """Poll ``cond`` on the event loop (bounded): waits for a state, never asserts a time."""
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < end, "condition not reached"
        await asyncio.sleep(0.005)


class _App:
    """create_app + startup + an httpx client on it; shutdown on exit."""

    def __init__(self, repo, factory, **cfg):
        self.app = create_app(make_config(repo, inline_run_us=0, **cfg), session_factory=factory)

    async def __aenter__(self):
        await self.app.startup(wait=True)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://t"
        )
        return self.app, self.client

    async def __aexit__(self, *exc):
        await self.client.aclose()
        await self.app.shutdown()


async def test_max_connections_503(repo_dir):
    async with AppClient(make_config(repo_dir, max_connections=2)) as c:
        c._transport.app.metrics.in_flight = 2  # as if two requests were running
        r = await c.get("/v2/models/linear")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "max_connections" in r.json()["error"]
        assert (await c.get("/v2/health/ready")).status_code == 200  # health is never refused
        c._transport.app.metrics.in_flight = 0


async def test_timeout_504_and_queued_work_dropped(tmp_path):
    models.linear(tmp_path / "r" / "linear.onnx")
    gate = Gate()
    async with _App(tmp_path / "r", gate.factory(), request_timeout_ms=100) as (app, c):
        body = {"inputs": [tensor("x", X)]}
        rs = await asyncio.gather(*(c.post("/v2/models/linear/infer", json=body) for _ in range(5)))
        assert [r.status_code for r in rs] == [504] * 5
        assert "timed out" in rs[0].json()["error"]
        m = app.repo.entries["linear"].versions[1]
        gate.open()
        await _until(lambda: m.scheduler.pending == 0)
        # one run was executing (concurrency 1); the four queued behind it were dropped unrun
        assert gate.started == 1 and m.stats.executions == 1
        r = await c.post("/v2/models/linear/infer", json=body)
        assert r.status_code == 200  # and the model still serves


async def test_per_request_timeout_parameter(tmp_path):
    models.linear(tmp_path / "r" / "linear.onnx")
    gate = Gate()
    async with _App(tmp_path / "r", gate.factory()) as (app, c):
        body = {"inputs": [tensor("x", X)], "parameters": {"timeout": 1000}}
        r = await c.post("/v2/models/linear/infer", json=body)
        assert r.status_code == 504 and "parameters.timeout" in r.json()["error"]
        gate.open()


async def test_inference_never_blocks_health(tmp_path):
    models.linear(tmp_path / "r" / "linear.onnx")
    gate = Gate()
    async with _App(tmp_path / "r", gate.factory()) as (app, c):
        slow = asyncio.ensure_future(
            c.post("/v2/models/linear/infer", json={"inputs": [tensor("x", X)]})
        )
        await _until(gate.reached.is_set)  # the run is blocked inside the model
        assert (await c.get("/v2/health/ready")).status_code == 200
        assert (await c.get("/api/v1/health")).status_code == 200
        assert not slow.done()
        gate.open()
        assert (await slow).status_code == 200


def _raising_factory(calls: list):
    """A session whose every second run raises mid-request, as a buggy kernel would."""

    def before(feeds):
        calls.append(1)
        if len(calls) % 2 == 0:
            raise RuntimeError("kernel exploded in /opt/secret/kernels.py")

    return lambda path, settings: Wrapped(ziggurat_session(path, settings), before)


async def test_kernel_raising_mid_request_is_a_500_with_request_id(tmp_path):
    models.linear(tmp_path / "r" / "linear.onnx")
    calls: list = []
    async with _App(tmp_path / "r", _raising_factory(calls)) as (app, c):
        body = {"inputs": [tensor("x", X)]}
        statuses = []
        for i in range(6):
            r = await c.post(
                "/v2/models/linear/infer", json=body, headers={"x-request-id": f"req-{i}"}
            )
            statuses.append(r.status_code)
            if r.status_code == 500:
                err = r.json()["error"]
                assert f"req-{i}" in err and "Traceback" not in err and "/opt/" not in err
        assert statuses == [200, 500] * 3  # the server kept serving between failures
