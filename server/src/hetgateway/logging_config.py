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

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from hetgateway.request_context import current_request_id

# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName", "color_message"}  # uvicorn's ANSI copy of the message

# uvicorn's own access log would duplicate the gateway's (and log raw paths); errors stay.
_QUIET_LOGGERS = ("uvicorn.access",)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: time (UTC, ms), level, logger, message,
    request id, the ``extra=`` fields, and the exception text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
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
        return json.dumps(payload, default=str, ensure_ascii=False)


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
