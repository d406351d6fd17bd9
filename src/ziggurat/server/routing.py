"""Routes and the router: which handler answers a method and path.

A route's pattern is a path with ``{param}`` segments (``/v2/models/{model}/infer``); a segment
matches one path segment, never a ``/``. Static paths are a dict lookup; parametrised ones are
regexes tried in order, with matched paths cached (bounded, since clients choose paths).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    handler: Handler
    label: str  # metrics/log name of the route
    public: bool = False  # no API key needed (health)
    unlimited: bool = False  # not counted against max_connections (health)


class Router:
    """Static paths in a dict; ``{param}`` paths as regexes tried in order."""

    def __init__(self, routes: list[Route]):
        self.static: dict[str, dict[str, Route]] = {}
        self.dynamic: list[tuple[re.Pattern, dict[str, Route]]] = []
        # Matched dynamic paths (/v2/models/NAME/infer ...) repeat: skip the regex scan.
        self._cache: dict[str, tuple[dict[str, Route] | None, dict[str, str]]] = {}
        patterns: dict[str, dict[str, Route]] = {}
        for r in routes:
            patterns.setdefault(r.pattern, {})[r.method] = r
        for pattern, by_method in patterns.items():
            if "{" not in pattern:
                self.static[pattern] = by_method
            else:
                rx = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
                self.dynamic.append((re.compile(f"^{rx}$"), by_method))

    def match(self, path: str) -> tuple[dict[str, Route] | None, dict[str, str]]:
        by_method = self.static.get(path)
        if by_method is not None:
            return by_method, {}
        hit = self._cache.get(path)
        if hit is not None:
            return hit[0], dict(hit[1])
        found = self._match(path)
        if found[0] is not None:
            if len(self._cache) >= 1024:  # bounded: clients choose paths
                self._cache.clear()
            self._cache[path] = found
        return found[0], dict(found[1])

    def _match(self, path: str) -> tuple[dict[str, Route] | None, dict[str, str]]:
        if len(path) > 1 and path.endswith("/"):
            by_method = self.static.get(path.rstrip("/"))
            if by_method is not None:
                return by_method, {}
        for rx, by_method in self.dynamic:
            m = rx.match(path)
            if m:
                return by_method, m.groupdict()
        return None, {}
