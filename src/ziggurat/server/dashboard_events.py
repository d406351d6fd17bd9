"""``GET /api/v1/dashboard/events``: the dashboard's live metrics as server-sent events.

One sampler per app reads the counters the server keeps anyway (metrics.py, each model's
stats) once a second and pushes one ``sample`` event, encoded once, to every open stream. It
runs only while a stream is open: with no dashboard watching, nothing runs and nothing is kept
beyond what the server counts for ``/metrics``. The last ``HISTORY`` samples stay in memory, so
a page that reconnects (a network blip, a server restart) asks for ``?since=T`` and gets what it
missed; a restarted server has a new ``started`` time, which tells the page to start over.

Events: ``hello`` ``{"started", "interval_s", "batch_buckets", "auth",
"history": [sample ...], "models": [...]}`` then ``sample`` ``{"t", "req", "rps", "err":
{status: n}, "p50", "p90", "p99", "queue", "in_flight", "batch": [n per bucket], "rss", "dev",
"models": [...]}`` (counters cumulative; the rate over the last interval; latency percentiles
(ms) of the requests that finished in it, from each model's window of recent latencies).

The stream is a long-lived response, so it bypasses the request/response path (its timeout
would cut it): the app hands it the raw ASGI scope. It checks the API key like every route.
Browsers' EventSource cannot send headers, so the page reads the stream with fetch(), which can.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from ziggurat.server.codecs import dumps
from ziggurat.server.http import Request
from ziggurat.server.metrics import BATCH_BUCKETS, rss_bytes
from ziggurat.server.routes_dashboard import INFER_ROUTES, overview

if TYPE_CHECKING:
    from ziggurat.server.app import ZigguratApp

INTERVAL_S = 1.0
HISTORY = 600  # ten minutes at one sample a second
MAX_STREAMS = 16  # a page is one stream; more than this many watchers is a misbehaving client
STREAM_MAX_S = 300.0  # a stream ends after this and the page reconnects (bounds any one response)


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99 in ms of the latencies recorded during the last interval."""
    if not values:
        return {"p50": None, "p90": None, "p99": None}
    p = np.percentile(np.asarray(values, dtype=np.float64), [50, 90, 99])
    return {"p50": round(p[0], 3), "p90": round(p[1], 3), "p99": round(p[2], 3)}


class Hub:
    """The sampler and its subscribers for one app."""

    def __init__(self, app: ZigguratApp):
        self.app = app
        self.queues: set[asyncio.Queue] = set()
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.task: asyncio.Task | None = None
        self._prev: tuple[float, int] | None = None
        self._counts: dict[tuple, int] = {}  # requests per model version at the last sample

    def totals(self) -> tuple[int, dict[str, int], list[int]]:
        """Inference requests, errors by status, runs per batch-size bucket (all cumulative)."""
        m = self.app.metrics
        req, err = 0, {}
        for (route, _, status), n in list(m.requests.items()):
            if route in INFER_ROUTES:
                req += n
                if status >= 400:
                    err[str(status)] = err.get(str(status), 0) + n
        batch = [0] * (len(BATCH_BUCKETS) + 1)
        for counts, _, _ in list(m.batch.data.values()):
            batch = [a + b for a, b in zip(batch, counts)]
        return req, err, batch

    def recent_latencies(self, loaded: list) -> list[float]:
        """Each model's latencies (ms) recorded since the last sample, from its window."""
        seen, out = {}, []
        first = self._prev is None  # no interval yet: nothing counts as new
        for m in loaded:
            key = (m.name, m.version, m.loaded_at)
            recent = m.stats.recent_ms
            total = m.stats.success + m.stats.failure
            seen[key] = total
            new = min(total - self._counts.get(key, total if first else 0), len(recent))
            if new > 0:
                out += list(itertools.islice(recent, len(recent) - new, len(recent)))
        self._counts = seen
        return out

    def sample(self) -> dict[str, Any]:
        """One point: cumulative counters, plus rate and percentiles since the last point."""
        now = time.time()
        req, err, batch = self.totals()
        loaded = self.app.repo.loaded()
        rps = None
        if self._prev is not None:
            t0, req0 = self._prev
            rps = round((req - req0) / max(now - t0, 1e-6), 3)
        self._prev = (now, req)
        return {
            "t": round(now, 3),
            "req": req,
            "rps": rps,
            "err": err,
            **percentiles(self.recent_latencies(loaded)),
            "queue": sum(m.scheduler.pending for m in loaded),
            "in_flight": self.app.metrics.in_flight,
            "batch": batch,
            "rss": rss_bytes(),
            "dev": None,  # no GPU memory pool is in use: the engine runs on the CPU here
        }

    def hello(self, since: float) -> bytes:
        body = {
            "started": self.app.started,
            "interval_s": INTERVAL_S,
            "batch_buckets": BATCH_BUCKETS,
            "auth": self.app.auth.enabled,
            "history": [s for s in self.history if s["t"] > since],
            "models": overview(self.app),
        }
        return _event("hello", body)

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=4)
        self.queues.add(q)
        if self.task is None or self.task.done():
            self._prev, self._counts = None, {}  # a gap since the last watcher: no rate over it
            self.history.append(self.sample())
            self.task = asyncio.get_running_loop().create_task(self._run())
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self.queues.discard(q)

    async def _run(self) -> None:
        while self.queues:
            await asyncio.sleep(INTERVAL_S)
            if not self.queues:
                break
            s = self.sample()
            self.history.append(s)
            data = _event("sample", {**s, "models": overview(self.app)})
            for q in list(self.queues):
                if q.full():  # a client that does not read: drop its oldest point
                    q.get_nowait()
                q.put_nowait(data)
        self.task = None


def hub_of(app: ZigguratApp) -> Hub:
    hub = app.__dict__.get("_dashboard_hub")
    if hub is None:
        hub = app.__dict__["_dashboard_hub"] = Hub(app)
    return hub


def _event(name: str, body: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(body) + b"\n\n"


async def _refuse(send: Any, status: int, message: str, headers: list | None = None) -> None:
    body = dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def events(app: ZigguratApp, scope: dict, receive: Any, send: Any) -> None:
    """The SSE response: ``hello``, then a ``sample`` a second, until the client leaves, the
    server shuts down, or STREAM_MAX_S pass (the page reconnects with ``?since``)."""
    req = Request(scope, receive, 0)
    t_start = time.perf_counter()
    status = 200
    try:
        if req.method != "GET":
            status = 405
            return await _refuse(send, 405, "use GET for the event stream", [(b"allow", b"GET")])
        code = app.auth.check(req.headers) if app.auth.enabled else 0
        if code:
            status = code
            msg = "an API key is required" if code == 401 else "the API key is not valid"
            return await _refuse(send, code, msg, [(b"www-authenticate", b"Bearer")])
        hub = hub_of(app)
        if len(hub.queues) >= MAX_STREAMS:
            status = 503
            return await _refuse(send, 503, f"{MAX_STREAMS} dashboards are open; close one")
        try:
            since = float(req.query().get("since", "0"))
        except ValueError:
            since = 0.0
        await _stream(hub, since, receive, send)
    finally:
        app.metrics.request("dashboard_events", "", status, time.perf_counter() - t_start)


async def _stream(hub: Hub, since: float, receive: Any, send: Any) -> None:
    q = hub.subscribe()

    gone = asyncio.Event()

    async def watch() -> None:  # the client leaving ends the stream
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()
        with contextlib.suppress(asyncio.QueueFull):
            q.put_nowait(b"")  # wake the loop below

    watcher = asyncio.get_running_loop().create_task(watch())
    # uvicorn asks a connection to close on shutdown by clearing its cycle's keep_alive; a
    # stream that never ends would hold the shutdown for its whole grace period.
    cycle = getattr(send, "__self__", None)
    keep_alive = getattr(cycle, "keep_alive", None) is True
    end = time.monotonic() + STREAM_MAX_S
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),  # proxies: pass events through as they come
                ],
            }
        )
        first = b"retry: 2000\n\n" + hub.hello(since)
        await send({"type": "http.response.body", "body": first, "more_body": True})
        while time.monotonic() < end:
            data = await q.get()
            if gone.is_set() or (keep_alive and not getattr(cycle, "keep_alive", True)):
                break
            await send({"type": "http.response.body", "body": data, "more_body": True})
        if not gone.is_set():
            await send({"type": "http.response.body", "body": b""})
    except OSError:  # the client went away mid-send
        pass
    finally:
        hub.unsubscribe(q)
        watcher.cancel()
