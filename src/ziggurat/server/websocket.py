"""``WS /api/v1/stream``: many inference requests over one WebSocket, results as they finish.

Protocol (see docs/server.md):

* A text frame is one JSON request ``{"id", "model", "version"?, "inputs", "outputs"?,
  "parameters"?}`` (the /api/v1/infer body plus a client-chosen ``id``).
* A binary frame is a 4-byte little-endian length N, N bytes of that JSON request, then the
  tensor bytes of inputs that carry ``parameters.binary_data_size`` (the V2 binary extension).
* Each reply carries the request's ``id``: ``{"id", "model_name", "model_version", "outputs"}`` or
  ``{"id", "error", "status"}``. Replies come in completion order. A reply with binary outputs
  (``binary_data_output`` or an output's ``binary_data``) is a binary frame in the same layout.
* At most ``stream_max_in_flight`` requests run per connection; past that the server stops
  reading the socket until one finishes (TCP backpressure reaches the client).
* Close codes: 1007 a frame that is not a request (bad JSON, lying length), 1008 auth failed,
  1009 a frame over max_body_mb, 1013 server busy (max_connections), 1001 server shutting down.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import TYPE_CHECKING, Any

from ziggurat.server import codecs, inference
from ziggurat.server.errors import HTTPError
from ziggurat.server.http import Request, Response, json_response
from ziggurat.server.middleware import request_id
from ziggurat.server.routing import Route

if TYPE_CHECKING:
    from ziggurat.server.app import ZigguratApp

log = logging.getLogger("ziggurat.server")

PATH = "/api/v1/stream"


class ProtocolViolation(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason[:120]  # close reasons must fit a control frame (125 bytes)


class StreamHandler:
    def __init__(self, app: ZigguratApp):
        self.app = app

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        app = self.app
        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        if scope["path"].rstrip("/") != PATH:
            await send({"type": "websocket.close", "code": 1008, "reason": "no such stream"})
            return

        query = Request(scope, receive, 0).query()
        if app.auth.enabled and app.auth.check(headers, query):
            await send({"type": "websocket.close", "code": 1008, "reason": "API key required"})
            return
        origin = headers.get("origin")
        if origin and app.cors.enabled and not app.cors.allowed(origin):
            await send({"type": "websocket.close", "code": 1008, "reason": "origin not allowed"})
            return
        rid = request_id(headers)
        await send({"type": "websocket.accept", "headers": [(b"x-request-id", rid.encode())]})
        if app.metrics.in_flight >= app.config.max_connections:
            app.metrics.rejected += 1
            await send({"type": "websocket.close", "code": 1013, "reason": "server busy"})
            return
        app.metrics.in_flight += 1
        try:
            conn = _Connection(app, receive, send, scope)
            conn.rid = rid
            await conn.run()
        finally:
            app.metrics.in_flight -= 1


class _Connection:
    def __init__(self, app: ZigguratApp, receive: Any, send: Any, scope: dict):
        self.app = app
        self.receive = receive
        self._send = send
        self.client = (scope.get("client") or ("",))[0]
        self.slots = asyncio.Semaphore(app.config.stream_max_in_flight)
        self.send_lock = asyncio.Lock()
        self.tasks: set[asyncio.Task] = set()
        self.closed = False
        self.rid = ""  # the connection's request id; a message's is "<this>/<its id>"

    async def send(self, msg: dict) -> None:
        if self.closed:
            return
        async with self.send_lock:
            try:
                await self._send(msg)
            except Exception:  # the peer went away mid-send; the reader loop will see it
                self.closed = True

    async def run(self) -> None:
        limit = self.app.config.max_body_bytes
        try:
            while True:
                await self.slots.acquire()  # backpressure: no read while the window is full
                msg = await self.receive()
                if msg["type"] == "websocket.disconnect":
                    self.slots.release()
                    break
                data = msg.get("bytes")
                text = msg.get("text")
                size = len(data) if data is not None else len((text or "").encode())
                if size > limit:
                    raise ProtocolViolation(1009, f"message of {size} bytes exceeds {limit}")
                req = self._parse(data, text)
                task = asyncio.get_running_loop().create_task(self._serve(req, size))
                self.tasks.add(task)
                task.add_done_callback(self._done)
        except ProtocolViolation as pv:
            await self.send({"type": "websocket.close", "code": pv.code, "reason": pv.reason})
            self.closed = True
        finally:
            await self._drain()

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        self.slots.release()

    async def _drain(self) -> None:
        # The client closed or broke the stream: nobody will read the replies, so the work
        # still in flight is cancelled (queued jobs are dropped before they run).
        for t in list(self.tasks):
            t.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def _parse(self, data: bytes | None, text: str | None) -> tuple[Any, memoryview | None]:
        if data is not None:
            if len(data) < 4:
                raise ProtocolViolation(1007, "binary frame shorter than its 4-byte header length")
            (n,) = struct.unpack_from("<I", data, 0)
            if n == 0 or 4 + n > len(data):
                raise ProtocolViolation(
                    1007, f"binary frame header length {n} does not fit the {len(data)}-byte frame"
                )
            header, binary = data[4 : 4 + n], memoryview(data)[4 + n :]
        else:
            header, binary = text or "", None
        try:
            obj = codecs.loads(header)
        except HTTPError as exc:
            raise ProtocolViolation(1007, exc.message) from None
        if not isinstance(obj, dict):
            raise ProtocolViolation(1007, "each message must be a JSON object")
        return obj, (binary if data is not None else None)

    async def _serve(self, parsed: tuple[Any, memoryview | None], size: int) -> None:
        obj, binary = parsed
        t0 = time.perf_counter()
        rid = obj.get("id")
        model = obj.get("model") if isinstance(obj.get("model"), str) else ""
        status = 200
        try:
            if not isinstance(rid, str | int) or isinstance(rid, bool):
                raise HTTPError(400, 'every stream request needs an "id" (string or integer)')
            async with asyncio.timeout(self.app.timeout_s):
                reply = await self._infer(obj, binary)
        except TimeoutError:
            status, reply = 504, {"error": "request timed out (request_timeout_ms)"}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status, message = self.app.describe_error(exc, f"{self.rid}/{rid}", "stream")
            reply = {"error": message}
        if status != 200:
            reply = {"id": rid, **reply, "status": status}
            reply = {"type": "websocket.send", "text": codecs.dumps(reply).decode()}
        await self.send(reply)
        seconds = time.perf_counter() - t0
        self.app.metrics.request("v1_stream", model, status, seconds)
        self.app.access.write(
            id=str(rid),
            method="WS",
            path=PATH,
            model=model,
            status=status,
            latency_ms=round(seconds * 1e3, 3),
            bytes_in=size,
            bytes_out=0,
            client=self.client,
        )

    async def _infer(self, obj: dict, binary: memoryview | None) -> dict:
        """The shared inference path; the reply id is the client's (integers allowed)."""
        body = {k: v for k, v in obj.items() if k != "id"}  # V2 ids are strings; ours may not be
        enc = await inference.infer(self.app, body, binary, reply_id=obj.get("id"))
        return enc.frame()


async def describe_stream(app: ZigguratApp, req: Request) -> Response:
    """``GET /api/v1/stream`` without a WebSocket upgrade: how to use the stream."""
    return json_response(
        {
            "websocket": PATH,
            "upgrade": "connect with ws:// or wss:// (Upgrade: websocket)",
            "auth": "Authorization/X-API-Key header, or ?api_key= for browsers",
            "max_in_flight": app.config.stream_max_in_flight,
            "protocol": "docs/server.md, WebSocket streaming",
        },
        headers={"upgrade": "websocket"},
    )


ROUTES = [Route("GET", PATH, describe_stream, "v1_stream")]
