"""Minimal request/response types for the raw ASGI app (no framework on the hot path)."""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any
from urllib.parse import parse_qs

from ziggurat.server.codecs import dumps
from ziggurat.server.errors import HTTPError


class ClientDisconnected(Exception):
    """The client went away before its request body arrived."""


class Request:
    """One HTTP request: method, path, lowercase headers, the body read once under a limit."""

    __slots__ = (
        "scope",
        "_receive",
        "method",
        "path",
        "headers",
        "id",
        "model",
        "bytes_in",
        "_body",
        "limit",
        "route",
        "finished",
    )

    def __init__(self, scope: dict, receive: Any, limit: int):
        self.scope = scope
        self._receive = receive
        self.method: str = scope.get("method", "GET")
        self.path: str = scope["path"]
        self.headers: dict[str, str] = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())
        }
        self.id = ""
        self.model = ""
        self.route = "other"
        self.bytes_in = 0
        self._body: bytes | None = None
        self.limit = limit
        # The body was received to its end (or the client left). Without a Content-Length or
        # Transfer-Encoding an HTTP/1.1 request has no body, so there is nothing to drain.
        self.finished = "content-length" not in self.headers and (
            "transfer-encoding" not in self.headers
        )

    def query(self) -> dict[str, str]:
        qs = self.scope.get("query_string", b"").decode("latin-1")
        return {k: v[-1] for k, v in parse_qs(qs).items()}

    async def body(self) -> bytes:
        """The whole body (413 past the limit), decompressed if Content-Encoding says so."""
        if self._body is not None:
            return self._body
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            raise _too_large(int(declared), self.limit)
        chunks, size = [], 0
        while True:
            msg = await self._receive()
            if msg["type"] == "http.disconnect":
                self.finished = True
                raise ClientDisconnected()
            part = msg.get("body", b"")
            size += len(part)
            if size > self.limit:
                self.bytes_in = size
                raise _too_large(size, self.limit)
            chunks.append(part)
            if not msg.get("more_body", False):
                self.finished = True
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.bytes_in = len(body)
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "deflate"):
            body = _decompress(body, encoding, self.limit)
        elif encoding not in ("", "identity"):
            raise HTTPError(415, f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
        self._body = body
        return body

    async def drain(self, max_bytes: int, max_s: float) -> bool:
        """Read and discard what is left of the body, at most ``max_bytes`` for ``max_s``.

        An answer sent before the body was read (413, 401, 404 ...) reaches clients that send
        the whole body before they read (Python's urllib, requests) only if the server reads
        that body: closing a socket with unread data makes the kernel reset the connection, and
        the client sees the reset instead of the answer. nginx lingers for the same reason.
        Returns whether the body was consumed (False: the caller closes the connection).
        """
        if self.finished:
            return True
        drained, end = 0, time.monotonic() + max_s
        try:
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                msg = await asyncio.wait_for(self._receive(), left)
                if msg["type"] == "http.disconnect":
                    self.finished = True
                    return True
                drained += len(msg.get("body", b""))
                if not msg.get("more_body", False):
                    self.finished = True
                    return True
                if drained > max_bytes:
                    return False
        except TimeoutError:
            return False
        finally:
            self.bytes_in += drained

    async def json(self) -> Any:
        from ziggurat.server.codecs import loads

        body = await self.body()
        if not body.strip():
            return {}
        return loads(body)


def _too_large(size: int, limit: int) -> HTTPError:
    return HTTPError(
        413,
        f"request body of {size} bytes exceeds the limit of {limit} bytes (max_body_mb); "
        "send less or raise the limit",
    )


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    # wbits: 16+MAX_WBITS for a gzip wrapper, MAX_WBITS for zlib (what "deflate" means in HTTP).
    d = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)  # bounded: a zip bomb stops at the limit
    except zlib.error as exc:
        raise HTTPError(400, f"body is not valid {encoding} data: {exc}") from None
    if len(out) > limit:
        raise _too_large(len(out), limit)
    if not d.eof:
        raise HTTPError(400, f"body is truncated {encoding} data")
    return out


class Response:
    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(
        self,
        body: bytes = b"",
        status: int = 200,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(obj), status, "application/json", headers)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps({"error": message}), status, "application/json", headers)
