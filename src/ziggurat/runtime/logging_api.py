"""onnxruntime's process-wide logging switches, over Python's ``logging`` ("ziggurat" logger).

Severities are onnxruntime's: 0 verbose, 1 info, 2 warning (default), 3 error, 4 fatal. A callback
set with ``set_default_logger_callback`` receives every record of the ``ziggurat`` loggers at or
above the severity as ``callback(severity, category, logid, code_location, message)``.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import ConfigError

_LEVELS = {
    0: logging.DEBUG,
    1: logging.INFO,
    2: logging.WARNING,
    3: logging.ERROR,
    4: logging.CRITICAL,
}
_LOGGER = "ziggurat"
_handler: logging.Handler | None = None


def _severity(level: int) -> int:
    """onnxruntime's severity of a logging level (records between levels round down)."""
    return max([s for s, lv in _LEVELS.items() if lv <= level], default=0)


def _check(severity: Any) -> int:
    if isinstance(severity, bool) or severity not in _LEVELS:
        raise ConfigError(
            f"logger severity must be 0 (verbose), 1 (info), 2 (warning), 3 (error) or 4 "
            f"(fatal); got {severity!r}"
        )
    return _LEVELS[severity]


def set_default_logger_severity(severity: int) -> None:
    """Log records of this severity and above (the ``ziggurat`` logger's level)."""
    logging.getLogger(_LOGGER).setLevel(_check(severity))


def set_default_logger_verbosity(verbosity: int) -> None:
    """onnxruntime's detail of verbose (severity 0) logging; Ziggurat's verbose detail is chosen
    with ZIGGURAT_DEBUG=1/2 instead, so this only checks the value."""
    if isinstance(verbosity, bool) or not isinstance(verbosity, int) or verbosity < 0:
        raise ConfigError(f"logger verbosity must be an int >= 0; got {verbosity!r}")


class _CallbackHandler(logging.Handler):
    """Hands each record to the user's callback; a callback that raises is reported the way
    ``logging`` reports a failing handler (a traceback on stderr) and never fails the code
    that logged."""

    def __init__(self, callback: Any):
        super().__init__(logging.DEBUG)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.callback(
                _severity(record.levelno), record.name, str(getattr(record, "logid", "")),
                f"{record.filename}:{record.lineno} {record.funcName}", record.getMessage(),
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - a user callback may raise anything
            self.handleError(record)


def set_default_logger_callback(callback: Any, severity: int = 2) -> None:
    """Send Ziggurat's log records to ``callback(severity, category, logid, code_location,
    message)`` from ``severity`` up (which becomes the default severity); ``None`` restores
    the default handling without changing the severity (which must still be 0-4)."""
    global _handler
    level = _check(severity)
    if callback is not None and not callable(callback):
        raise ConfigError(
            f"set_default_logger_callback needs a callable or None; got {type(callback).__name__}"
        )
    logger = logging.getLogger(_LOGGER)
    if _handler is not None:
        logger.removeHandler(_handler)
        _handler = None
    if callback is not None:
        _handler = _CallbackHandler(callback)
        logger.addHandler(_handler)
        logger.setLevel(level)
