"""Cross-cutting request handling: API keys, CORS, request ids, the structured access log.

These are plain functions the app calls in order on every request rather than stacked ASGI
middleware classes: one pass over the headers, no extra coroutine layers on the hot path.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import sys
import time
from typing import Any

import orjson

from ziggurat.config import Config

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id(headers: dict[str, str]) -> str:
    """The client's X-Request-ID when it is sane (echoed back), else a fresh random id."""
    rid = headers.get("x-request-id")
    if rid and _REQUEST_ID_RE.match(rid):
        return rid
    return os.urandom(8).hex()


class Auth:
    """API-key check: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, constant-time."""

    def __init__(self, keys: tuple[str, ...]):
        # Digests, not the keys: compare_digest on equal-length inputs leaks nothing, while
        # on the raw keys its early exit on a length mismatch would tell a key's length.
        self.keys = [hashlib.sha256(k.encode()).digest() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def check(self, headers: dict[str, str], query: dict[str, str] | None = None) -> int:
        """0 when allowed, 401 when no key was given, 403 when the key is wrong."""
        if not self.keys:
            return 0
        given = headers.get("x-api-key")
        if given is None:
            auth = headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                given = token.strip()
        if given is None and query is not None:
            given = query.get("api_key")  # WebSocket clients in browsers cannot set headers
        if given is None:
            return 401
        g = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
        ok = False
        for k in self.keys:  # compare against every key so timing does not tell which matched
            ok |= hmac.compare_digest(g, k)
        return 0 if ok else 403


class Cors:
    """CORS for configured origins; with credentials the origin is echoed, never '*'."""

    ALLOW_HEADERS = (
        "authorization, content-type, content-encoding, x-api-key, x-request-id, "
        "inference-header-content-length"
    )
    EXPOSE_HEADERS = "x-request-id, inference-header-content-length"

    def __init__(self, config: Config):
        self.origins = set(config.cors_origins)
        self.any = "*" in self.origins
        self.credentials = config.cors_allow_credentials

    @property
    def enabled(self) -> bool:
        return bool(self.origins)

    def allowed(self, origin: str | None) -> bool:
        return bool(origin) and (self.any or origin in self.origins)

    def headers(self, origin: str) -> dict[str, str]:
        h = {
            "access-control-allow-origin": "*" if self.any else origin,
            "access-control-expose-headers": self.EXPOSE_HEADERS,
        }
        if not self.any:
            h["vary"] = "Origin"
        if self.credentials:
            h["access-control-allow-credentials"] = "true"
        return h

    def preflight(self, origin: str) -> dict[str, str]:
        h = self.headers(origin)
        h["access-control-allow-methods"] = "GET, POST, OPTIONS"
        h["access-control-allow-headers"] = self.ALLOW_HEADERS
        h["access-control-max-age"] = "600"
        return h


class AccessLog:
    """One JSON line per request on stdout (buffered; flushed by the app's periodic tick)."""

    def __init__(self, enabled: bool, stream: Any = None):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stdout
        self._buf = getattr(self.stream, "buffer", None)

    def write(self, **fields: Any) -> None:
        if not self.enabled:
            return
        fields["ts"] = round(time.time(), 6)
        line = orjson.dumps(fields) + b"\n"
        try:
            if self._buf is not None:
                self._buf.write(line)
            else:
                self.stream.write(line.decode())
        except (OSError, ValueError):  # a closed or broken stdout must not fail requests
            pass

    def flush(self) -> None:
        try:
            if self._buf is not None:
                self._buf.flush()
            else:
                self.stream.flush()
        except (OSError, ValueError):
            pass
