"""HTTP errors and the map from Ziggurat's exception tree to HTTP status codes.

Handlers raise :class:`HTTPError` (or any ``ZigguratError``); the app turns either into a JSON body
``{"error": "..."}`` with the status from :func:`status_for`. Anything else is a bug: a 500 whose
body carries only the request id, with the traceback in the server log.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

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
    # ExecutionError is absent on purpose: feeds are validated before a run, so a kernel that
    # still raises is a fault of the server or the model, a 500 that carries the request id.
)


def status_for(exc: BaseException) -> int:
    """The HTTP status that ``exc`` maps to (500 for anything not a known client error)."""
    if isinstance(exc, HTTPError):
        return exc.status
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


class Redactor:
    """Removes the server's file system paths from messages sent to clients.

    Engine errors name files (a corrupt model's loader error, an external-data reference);
    clients must learn the model's name, not where the server keeps it. Each known prefix
    (model repository, model folders, working directory, home, temp dir, Python prefix) is cut
    from the message, leaving the path relative to it, e.g. ``corrupt.onnx``.
    """

    def __init__(self, roots: Iterable[str | Path] = ()):
        prefixes = {str(Path(r)) for r in roots if r}
        prefixes |= {os.getcwd(), str(Path.home()), tempfile.gettempdir(), sys.prefix}
        prefixes |= {str(Path(zerr.__file__).resolve().parent.parent)}
        found = {p for p in prefixes if p not in ("", "/")}
        for p in list(found):  # both spellings when a prefix is a symlink (/tmp -> /private/tmp)
            found.add(str(Path(p).resolve()))
        self.prefixes = sorted(found, key=len, reverse=True)

    def __call__(self, message: str) -> str:
        for p in self.prefixes:
            if p in message:
                message = message.replace(p + os.sep, "").replace(p, "<server path>")
        return message
