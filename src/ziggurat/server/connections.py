"""Connection-level limits that the ASGI app cannot see: a deadline for a request's headers.

uvicorn closes idle keep-alive connections after a response, but a connection that never
completes its request headers (slowloris: open, send a few header bytes, wait) is held forever:
the app is only called once the headers are complete, so ``request_timeout_ms`` never starts.
Enough of them exhaust the server's file descriptors. :func:`protocol_class` wraps uvicorn's
HTTP protocol so that a connection gets ``header_timeout_s`` from when it opens (or from its
last response) to complete the next request's headers; past that it gets a 408 (if it sent
part of a request) and is closed. Requests whose headers are complete are the app's business
(request_timeout_ms, 504).
"""

from __future__ import annotations

import asyncio
from typing import Any

_BODY = b'{"error":"request headers not completed in time; connection closed"}'
_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + _BODY
)


def protocol_class(base: type, header_timeout_s: float) -> type:
    """``base`` (a uvicorn HTTP protocol class) with the header deadline described above."""

    class HeaderDeadline(base):  # type: ignore[misc, valid-type]
        _zg_timer: asyncio.TimerHandle | None = None
        _zg_partial = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._zg_arm()

        def data_received(self, data: bytes) -> None:
            if self.cycle is None or self.cycle.response_complete:
                self._zg_partial = True  # bytes of a request whose headers are not complete
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._zg_arm()

        def handle_websocket_upgrade(self, *args: Any) -> None:
            self._zg_cancel()  # the connection now belongs to the WebSocket protocol
            super().handle_websocket_upgrade(*args)

        def connection_lost(self, exc: Exception | None) -> None:
            self._zg_cancel()
            super().connection_lost(exc)

        def _zg_cancel(self) -> None:
            if self._zg_timer is not None:
                self._zg_timer.cancel()
                self._zg_timer = None

        def _zg_arm(self) -> None:
            self._zg_cancel()
            self._zg_partial = False
            self._zg_timer = self.loop.call_later(header_timeout_s, self._zg_expire, self.cycle)

        def _zg_expire(self, armed_cycle: Any) -> None:
            self._zg_timer = None
            if self.transport.is_closing() or self.cycle is not armed_cycle:
                return  # closed already, or a new request's headers arrived in time
            if self._zg_partial:
                self.transport.write(_408)
            self.transport.close()

    HeaderDeadline.__name__ = f"HeaderDeadline{base.__name__}"
    return HeaderDeadline
