"""Ziggurat's model server: an ASGI app serving /api/v1, KServe V2, WebSocket streams, /metrics.

``create_app(config)`` builds the ASGI application; ``ziggurat serve`` runs it on uvicorn.
The HTTP status of each Ziggurat error lives in ``ziggurat.server.errors.status_for``.
"""

from __future__ import annotations

from typing import Any

from ziggurat.config import Config


def create_app(config: Config | None = None, session_factory: Any = None) -> Any:
    """The ASGI app for ``config`` (``session_factory`` replaces the engine, for tests)."""
    from ziggurat.server.app import ZigguratApp

    return ZigguratApp(config or Config(), session_factory)


__all__ = ["Config", "create_app"]
