"""The dashboard's server side: the page and its files (types, caching, CSP), the models data,
and the event stream (auth, samples that follow requests, nothing running once nobody watches).
The page itself is tested in a real browser in tests/dashboard/."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.server.conftest import AppClient, make_config
from tests.server.helpers import X, tensor
from ziggurat.server import dashboard_events, routes_dashboard
from ziggurat.server.dashboard_events import hub_of, percentiles

pytestmark = pytest.mark.anyio
KEY = "k-dashboard"


async def test_page_at_root_and_dashboard(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        for path in ("/", "/dashboard", "/dashboard/"):
            r = await c.get(path)
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/html; charset=utf-8"
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert r.headers["cache-control"] == "no-cache"
            assert "<title>Ziggurat dashboard</title>" in r.text
        again = await c.get("/", headers={"if-none-match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


async def test_assets_have_types_and_versioned_urls_are_immutable(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        html = (await c.get("/")).text
        want = {
            "app.js": "text/javascript; charset=utf-8",
            "charts.js": "text/javascript; charset=utf-8",
            "inputs.js": "text/javascript; charset=utf-8",
            "style.css": "text/css; charset=utf-8",
        }
        for name, ctype in want.items():
            a = routes_dashboard.assets()[name]
            url = f"/dashboard/{name}?v={a.etag[1:9]}"
            assert f'"{url}"' in html  # the page links the file by its content hash
            r = await c.get(url)
            assert r.status_code == 200 and r.headers["content-type"] == ctype
            assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert r.content == a.body
            stale = await c.get(f"/dashboard/{name}?v=00000000")
            assert stale.headers["cache-control"] == "no-cache"
        samples = (await c.get("/dashboard/samples.json")).json()
        assert samples["digits"]["inputs"]["image"]["shape"] == [1, 64]


@pytest.mark.parametrize(
    "path", ["/dashboard/nope.js", "/dashboard/..%2Frouting.py", "/dashboard/index.html"]
)
async def test_unknown_files_are_404(repo_dir, path):
    async with AppClient(make_config(repo_dir)) as c:
        assert (await c.get(path)).status_code == 404


async def test_models_data_for_the_table(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        await c.post("/v2/models/linear/infer", json={"inputs": [tensor("x", X)]})
        rows = (await c.get("/api/v1/dashboard/models")).json()["models"]
        by = {(r["name"], r.get("version")): r for r in rows}
        lin = by[("linear", "1")]
        assert lin["state"] == "READY" and lin["device"] == "cpu" and lin["precision"] == "fp32"
        assert lin["requests"] == 1 and lin["errors"] == 0
        assert lin["p50_ms"] is not None and lin["p99_ms"] >= lin["p50_ms"]
        assert lin["batch_sizes"] == {"1": 1}  # one run, holding the one request
        assert lin["load_s"] > 0 and lin["memory_bytes"] > 0
        assert lin["inputs"][0]["name"] == "x"
        assert by[("corrupt", None)]["state"] == "UNAVAILABLE"


async def test_keys_guard_the_data_not_the_page(repo_dir):
    async with AppClient(make_config(repo_dir, api_keys=(KEY,))) as c:
        assert (await c.get("/")).status_code == 200
        assert (await c.get("/dashboard/app.js")).status_code == 200
        assert (await c.get("/api/v1/dashboard/models")).status_code == 401
        ok = await c.get("/api/v1/dashboard/models", headers={"x-api-key": KEY})
        assert ok.status_code == 200 and ok.json()["auth"] is True


class _Stream:
    """Drives the raw ASGI event stream: collects what it sends, disconnects on demand."""

    def __init__(self, app, query: str = "", headers=()):
        self.sent: asyncio.Queue = asyncio.Queue()
        self.leave = asyncio.Event()
        scope = {
            "type": "http",
            "method": "GET",
            "path": routes_dashboard.EVENTS_PATH,
            "query_string": query.encode(),
            "headers": [(k.encode(), v.encode()) for k, v in headers],
        }
        self.task = asyncio.get_running_loop().create_task(
            dashboard_events.events(app, scope, self.receive, self.send)
        )

    async def receive(self):
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, msg):
        await self.sent.put(msg)

    async def event(self) -> tuple[str, dict]:
        async with asyncio.timeout(30):  # a bound for a broken stream, not a timing check
            while True:
                msg = await self.sent.get()
                text = msg.get("body", b"").decode()
                for block in text.split("\n\n"):
                    lines = dict(ln.split(": ", 1) for ln in block.splitlines() if ": " in ln)
                    if "event" in lines:
                        return lines["event"], json.loads(lines["data"])

    async def close(self):
        self.leave.set()
        async with asyncio.timeout(30):
            await self.task


async def test_event_stream_follows_requests_and_stops_when_nobody_watches(repo_dir, monkeypatch):
    monkeypatch.setattr(dashboard_events, "INTERVAL_S", 0.01)
    async with AppClient(make_config(repo_dir)) as c:
        app = c._transport.app
        hub = hub_of(app)
        assert hub.task is None  # nothing runs before anyone watches
        s = _Stream(app)
        start = await s.sent.get()
        assert start["status"] == 200
        assert dict(start["headers"])[b"content-type"].startswith(b"text/event-stream")
        name, hello = await s.event()
        assert name == "hello" and hello["started"] == app.started
        assert len(hello["history"]) == 1 and hello["history"][0]["req"] == 0
        assert any(m["name"] == "linear" for m in hello["models"])
        for _ in range(3):
            r = await c.post("/v2/models/linear/infer", json={"inputs": [tensor("x", X)]})
            assert r.status_code == 200
        await c.post("/v2/models/linear/infer", json={"inputs": [tensor("y", X)]})  # a 400
        seen_p50 = False
        while True:
            name, smp = await s.event()
            assert name == "sample"
            seen_p50 = seen_p50 or smp["p50"] is not None
            if smp["req"] == 4:
                break
        assert smp["err"] == {"400": 1}
        assert seen_p50  # the finished requests' latencies reached a sample
        lin = next(m for m in smp["models"] if m["name"] == "linear" and m.get("version") == "1")
        assert lin["requests"] == 4 and lin["errors"] == 1
        # A page that reconnects gets only the points after the last one it has.
        s2 = _Stream(app, f"since={smp['t']}")
        await s2.sent.get()
        _, hello2 = await s2.event()
        assert all(p["t"] > smp["t"] for p in hello2["history"])
        await s.close()
        await s2.close()
        assert not hub.queues
        async with asyncio.timeout(30):
            while hub.task is not None:  # the sampler ends within one interval
                await asyncio.sleep(0.01)


async def test_event_stream_needs_the_key(repo_dir):
    async with AppClient(make_config(repo_dir, api_keys=(KEY,))) as c:
        app = c._transport.app
        s = _Stream(app)
        assert (await s.sent.get())["status"] == 401
        await s.task
        s = _Stream(app, headers=[("authorization", f"Bearer {KEY}")])
        assert (await s.sent.get())["status"] == 200
        assert (await s.event())[0] == "hello"
        await s.close()


def test_percentiles_of_an_interval():
    # numpy's linear interpolation: p50 of 1..100 is 50.5, p90 90.1, p99 99.01.
    assert percentiles([float(v) for v in range(1, 101)]) == {
        "p50": 50.5,
        "p90": 90.1,
        "p99": 99.01,
    }
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None}


class _Meta:
    def __init__(self, meta):
        self.custom_metadata_map = meta


class _Session:
    def __init__(self, meta):
        self.meta = meta

    def get_modelmeta(self):
        return _Meta(self.meta)


@pytest.mark.parametrize(
    "meta, want",
    [
        ({"labels": '["cat", "dog"]'}, ["cat", "dog"]),
        ({"classes": "cat, dog ,bird"}, ["cat", "dog", "bird"]),
        ({"labels": '{"not": "a list"}'}, None),
        ({"training": "no labels here"}, None),
    ],
)
def test_labels_from_model_metadata(meta, want):
    assert routes_dashboard.labels_of(_Session(meta)) == want
    assert routes_dashboard.labels_of(object()) is None  # a session without metadata
