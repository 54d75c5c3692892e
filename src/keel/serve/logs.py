"""Structured logs on stderr: one JSON object per line, for requests and for uvicorn's own messages.

An access line::

    {"time": "2026-05-01T12:00:00.123Z", "level": "info", "logger": "keel.serve.access",
     "method": "POST", "path": "/predict", "status": 200, "latency_ms": 0.41, "client": "127.0.0.1"}

Uvicorn's plain access log is switched off; its start-up and shutdown messages go through the same
formatter, so every line on stderr parses as JSON.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Final

ACCESS_LOGGER: Final = "keel.serve.access"
# Attributes every LogRecord has; anything else on a record was passed in `extra` and is logged.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "color_message", "asctime"}


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line: time (UTC), level, logger, message, and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if record.msg:
            line["message"] = record.getMessage()
        line.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def log_config(level: str = "info") -> dict[str, Any]:
    """The ``logging.config.dictConfig`` for uvicorn and keel's server: JSON lines on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    loggers = {name: {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
               for name in ("uvicorn", "uvicorn.error", "keel.serve", ACCESS_LOGGER)}
    loggers["uvicorn.access"] = {"handlers": [], "level": "WARNING", "propagate": False}
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
            "handlers": {"stderr": handler}, "loggers": loggers}


class AccessLog:
    """ASGI middleware: one access line per HTTP request, with its status and latency.

    A plain ASGI class rather than Starlette's BaseHTTPMiddleware, which costs a task and a stream
    per request: here it costs a clock read and one log call.

    Args:
        app: The ASGI application to wrap.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before it starts a response

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            client = scope.get("client")
            self.logger.info("", extra={
                "method": scope["method"], "path": scope["path"], "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "client": client[0] if client else None})
