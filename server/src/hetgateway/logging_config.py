"""Structured logs: one JSON object per line, each carrying the request id it belongs to.

Typical usage::

    from hetgateway.logging_config import configure_logging

    configure_logging(level="INFO")
    logging.getLogger("hetgateway").info("model loaded", extra={"model": "fashion_het"})
    # {"ts": "2026-11-24T05:30:00.123Z", "level": "INFO", "logger": "hetgateway",
    #  "message": "model loaded", "request_id": null, "model": "fashion_het"}

Fields passed through ``extra=`` become keys of the JSON object. Nothing here reads request
bodies or headers: what is logged is only what a caller passes, and the gateway never passes
API keys or image bytes.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from pydantic_core import to_json

from hetgateway.request_context import current_request_id

# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName", "color_message"}  # uvicorn's ANSI copy of the message

# uvicorn's own access log would duplicate the gateway's (and log raw paths); errors stay.
_QUIET_LOGGERS = ("uvicorn.access",)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: time (UTC, ms), level, logger, message,
    request id, the ``extra=`` fields, and the exception text when there is one.

    Written once per request (the access log): the UTC second is formatted once per second
    and the object is encoded by pydantic-core, not by ``json``."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": current_request_id(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_RECORD_ATTRIBUTES and key not in payload:
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return to_json(payload, fallback=str).decode()

    def _timestamp(self, created: float) -> str:
        """ISO 8601 UTC with milliseconds: ``2026-11-24T05:30:00.123Z``."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"


def configure_logging(*, level: str | int = "INFO") -> None:
    """Send every logger's records, as JSON lines, to stderr (replacing earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
