"""The ASGI application: routing, limits, auth, CORS, timeouts, errors and the access log.

A raw ASGI app rather than Starlette or FastAPI: measured on this machine, the framework layers
cost more than the whole inference of a small model (see benchmarks/server/RESULTS.md), and an
inference server has few, fixed routes. Per request it does, in order: request id, CORS
preflight, auth (every route but health), the max_connections limit (503 + Retry-After), body
limit (413), the route under ``request_timeout_ms`` (504; the work is cancelled, queued work is
dropped), errors to JSON, and one access-log line.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from typing import Any

from ziggurat.config import Config
from ziggurat.errors import ZigguratError
from ziggurat.server import dashboard_events
from ziggurat.server.errors import HTTPError, status_for
from ziggurat.server.http import ClientDisconnected, Request, Response, error_response
from ziggurat.server.metrics import Metrics
from ziggurat.server.middleware import AccessLog, Auth, Cors, request_id
from ziggurat.server.model import SessionFactory
from ziggurat.server.repository import ModelRepository
from ziggurat.server.routes_dashboard import EVENTS_PATH
from ziggurat.server.routing import Router

log = logging.getLogger("ziggurat.server")

# Bounds on reading an unread body before answering (see Request.drain): a client sending
# 300 MB to a 64 MB limit gets its 413; one sending forever is cut off.
DRAIN_MAX_BYTES = 1 << 30
DRAIN_MAX_S = 10.0
_CTYPES = {t: t.encode() for t in ("application/json", "application/octet-stream", "text/plain")}


class ZigguratApp:
    """The ASGI callable. ``session_factory`` swaps the engine (tests); default: Ziggurat."""

    def __init__(self, config: Config | None = None, session_factory: SessionFactory | None = None):
        from ziggurat.server import metrics, openapi, routes_v1, routes_v2, websocket
        from ziggurat.server.routes_dashboard import ROUTES as DASHBOARD_ROUTES

        self.config = config or Config()
        self.metrics = Metrics()
        self.repo = ModelRepository(self.config, session_factory, on_batch=self.metrics.batch_done)
        self.auth = Auth(self.config.api_keys)
        self.cors = Cors(self.config)
        self.access = AccessLog(self.config.access_log)
        self.router = Router(
            routes_v1.ROUTES
            + routes_v2.ROUTES
            + websocket.ROUTES
            + metrics.ROUTES
            + openapi.ROUTES
            + DASHBOARD_ROUTES
        )
        self.stream = websocket.StreamHandler(self)
        self.started = time.time()
        self.ready_event = asyncio.Event()
        self.startup_errors: list[str] = []
        self._tasks: set[asyncio.Task] = set()
        self._flusher: asyncio.Task | None = None
        self.timeout_s = self.config.request_timeout_ms / 1000
        self.redact = self.repo.redact

    # -- lifecycle --------------------------------------------------------------------------
    async def startup(self, wait: bool = False) -> None:
        """Begin loading the startup models in the background (``wait``: until done)."""
        task = asyncio.get_running_loop().create_task(self._load_startup())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self.access.enabled:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_log())
        if wait:
            await task

    async def _load_startup(self) -> None:
        try:
            self.startup_errors = await self.repo.load_startup()
        except Exception:  # a bug here must not kill the server; readiness stays false
            log.exception("loading startup models failed")
            self.startup_errors = ["startup loading failed; see the server log"]
        finally:
            self.ready_event.set()

    async def _flush_log(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            self.access.flush()

    async def shutdown(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._flusher is not None:
            self._flusher.cancel()
        await self.repo.close()
        self.access.flush()

    def is_ready(self) -> bool:
        """Startup finished and every command-line model is loaded (or unloaded on purpose).

        A repository model that fails to load does not hold readiness back: the others serve,
        and /api/v1/health reports the failure ("degraded").
        """
        if not self.ready_event.is_set():
            return False
        for name in self.repo.explicit:
            e = self.repo.entries.get(name)
            if e is None or not (e.versions or e.unloaded_by_user):
                return False
        return True

    # -- ASGI ---------------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            if scope["path"] == EVENTS_PATH:  # the dashboard's long-lived event stream
                await dashboard_events.events(self, scope, receive, send)
            else:
                await self._http(scope, receive, send)
        elif kind == "websocket":
            await self.stream.handle(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict, receive: Any, send: Any) -> None:
        t0 = time.perf_counter()
        req = Request(scope, receive, self.config.max_body_bytes)
        req.id = request_id(req.headers)
        origin = req.headers.get("origin") if self.cors.enabled else None
        counted = False
        try:
            resp, counted = await self._dispatch(req, origin)
        except HTTPError as exc:
            resp = error_response(exc.status, exc.message, exc.headers)
        finally:
            if counted:
                self.metrics.in_flight -= 1
        headers = [
            (b"content-type", _CTYPES.get(resp.content_type) or resp.content_type.encode()),
            (b"x-request-id", req.id.encode()),
        ]
        if not req.finished and (
            resp.status in (499, 504) or not await req.drain(DRAIN_MAX_BYTES, DRAIN_MAX_S)
        ):  # a client that stalled or left is not waited for again: close instead
            headers.append((b"connection", b"close"))
        body = resp.body
        if len(body) >= 1024 and "gzip" in req.headers.get("accept-encoding", ""):
            body = gzip.compress(body, 1)
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(body)).encode()))
        if resp.headers:
            headers += [(k.encode(), v.encode()) for k, v in resp.headers.items()]
        if origin and self.cors.allowed(origin) and req.method != "OPTIONS":
            headers += [(k.encode(), v.encode()) for k, v in self.cors.headers(origin).items()]
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        seconds = time.perf_counter() - t0
        # Only known models become metric labels: names from clients must not grow /metrics.
        label = req.model if req.model in self.repo.entries else ""
        self.metrics.request(req.route, label, resp.status, seconds)
        if self.access.enabled:
            self.access.write(
                id=req.id,
                method=req.method,
                path=req.path,
                model=req.model,
                status=resp.status,
                latency_ms=round(seconds * 1e3, 3),
                bytes_in=req.bytes_in,
                bytes_out=len(body),
                client=(scope.get("client") or ("",))[0],
            )

    async def _dispatch(self, req: Request, origin: str | None) -> tuple[Response, bool]:
        by_method, params = self.router.match(req.path)
        if req.method == "OPTIONS" and origin and req.headers.get("access-control-request-method"):
            if not self.cors.allowed(origin):
                raise HTTPError(403, f"origin {origin!r} is not allowed (cors_origins)")
            return Response(b"", 204, "text/plain", self.cors.preflight(origin)), False
        if by_method is None:
            raise HTTPError(404, f"no route {req.path}; see /docs for the endpoints")
        route = by_method.get(req.method)
        if route is None:
            allow = ", ".join(sorted(by_method))
            raise HTTPError(
                405, f"{req.method} is not allowed on {req.path} (use {allow})", {"allow": allow}
            )
        req.route = route.label
        if not route.public and self.auth.enabled:
            code = self.auth.check(req.headers)
            if code == 401:
                raise HTTPError(
                    401,
                    "an API key is required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                    {"www-authenticate": "Bearer"},
                )
            if code:
                raise HTTPError(403, "the API key is not valid")
        if not route.unlimited:
            if self.metrics.in_flight >= self.config.max_connections:
                self.metrics.rejected += 1
                raise HTTPError(
                    503,
                    f"server busy: {self.config.max_connections} requests in "
                    "flight (max_connections); retry shortly",
                    {"retry-after": "1"},
                )
            self.metrics.in_flight += 1
        counted = not route.unlimited
        try:
            async with asyncio.timeout(self.timeout_s):
                return await route.handler(self, req, **params), counted
        except TimeoutError:
            return error_response(
                504,
                f"request timed out after {self.config.request_timeout_ms} "
                "ms (request_timeout_ms); its work was cancelled",
            ), counted
        except ClientDisconnected:
            return error_response(499, "client disconnected"), counted
        except Exception as exc:
            status, message = self.describe_error(exc, req.id, f"{req.method} {req.path}")
            headers = exc.headers if isinstance(exc, HTTPError) else None
            return error_response(status, message, headers), counted

    def describe_error(self, exc: BaseException, rid: str, where: str) -> tuple[int, str]:
        """(status, client message) for any exception of a request, stream message or batch
        item: client errors keep their text (paths redacted); the rest are 500s, logged."""
        if isinstance(exc, HTTPError):
            return exc.status, self.redact(exc.message)
        status = status_for(exc)
        if status < 500:
            return status, self.redact(str(exc))
        log.error("request %s (%s) failed", rid, where, exc_info=exc)
        return 500, self.internal_error(rid, exc)

    def internal_error(self, rid: str, exc: BaseException) -> str:
        """A 500's message: the request id to find the traceback in the log, never the trace.

        An engine error (a kernel that raised) keeps its located, path-free summary; anything
        else is a bug whose text may carry internals, so only its type is named.
        """
        what = self.redact(str(exc)) if isinstance(exc, ZigguratError) else type(exc).__name__
        return f"internal error (request id {rid}): {what}; see the server log for this id"
