"""HTTP errors and the map from Ziggurat's exception tree to HTTP status codes.

Handlers raise :class:`HTTPError` (or any ``ZigguratError``); the app turns either into a JSON body
``{"error": "..."}`` with the status from :func:`status_for`. Anything else is a bug: a 500 whose
body carries only the request id, with the traceback in the server log.
"""

from __future__ import annotations

from ziggurat import errors as zerr


class HTTPError(Exception):
    """An error with an HTTP status, a message for the client and optional extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> HTTPError:
    return HTTPError(400, message)


def not_found(message: str) -> HTTPError:
    return HTTPError(404, message)


def unavailable(message: str, retry_after_s: int = 1) -> HTTPError:
    return HTTPError(503, message, {"retry-after": str(retry_after_s)})


# Order matters: the first matching class wins, so subclasses come before their bases.
_STATUS = (
    (zerr.InputError, 400),
    (zerr.ModelLoadError, 400),
    (zerr.UnsupportedModelError, 400),
    (zerr.GraphError, 400),
    (zerr.ConfigError, 400),
    # A kernel failing on data the client sent (wrong values for the model): the client's input.
    (zerr.ExecutionError, 400),
)


def status_for(exc: BaseException) -> int:
    """The HTTP status that ``exc`` maps to (500 for anything not a known client error)."""
    if isinstance(exc, HTTPError):
        return exc.status
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500
