"""WS /api/v1/stream in-process: backpressure bounds the requests in flight per connection."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.server import models
from tests.server.conftest import make_config
from tests.server.helpers import Gate, X, tensor
from ziggurat.server import create_app

pytestmark = pytest.mark.anyio


async def test_stream_backpressure_bounds_in_flight(tmp_path):
    """With stream_max_in_flight=3 the server stops reading the socket at 3 open requests."""
    models.linear(tmp_path / "r" / "linear.onnx")
    gate = Gate()
    app = create_app(
        make_config(tmp_path / "r", inline_run_us=0, stream_max_in_flight=3),
        session_factory=gate.factory(),
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
        m = None
        for _ in range(2000):  # until three requests are queued or running in the model
            e = app.repo.entries.get("linear")
            m = e.versions.get(1) if e else None
            if m is not None and m.scheduler.pending == 3:
                break
            await asyncio.sleep(0.005)
        assert m is not None and m.scheduler.pending == 3
        for _ in range(50):  # the runs are blocked: whatever time passes, no 4th read happens
            await asyncio.sleep(0)
        assert len(reads) == 1 + 3
        gate.open()
        for _ in range(2000):
            if sum(m["type"] == "websocket.send" for m in sent) == 10:
                break
            await asyncio.sleep(0.005)
        ids = sorted(json.loads(m["text"])["id"] for m in sent if m["type"] == "websocket.send")
        assert ids == list(range(10))
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(task, 5)
    finally:
        gate.open()
        task.cancel()
        await app.shutdown()


async def test_streams_past_max_connections_close_1013(repo_dir):
    """A flood of streams: past max_connections each new one is closed with 1013 (try again
    later), and a stream opened once load drops is served."""
    from tests.server.conftest import AppClient
    from tests.server.helpers import ws_exchange

    frame = json.dumps({"id": 1, "model": "linear", "inputs": [tensor("x", X)]})
    async with AppClient(make_config(repo_dir, max_connections=4)) as c:
        app = c._transport.app
        app.metrics.in_flight = 4  # as if four requests or streams were being handled
        for _ in range(20):
            replies, code = await ws_exchange(app, [frame])
            assert code == 1013 and replies == []
        assert app.metrics.rejected == 20
        app.metrics.in_flight = 0
        replies, code = await ws_exchange(app, [frame])
        assert code is None and json.loads(replies[0])["id"] == 1
        assert app.metrics.in_flight == 0  # the stream gave its slot back
