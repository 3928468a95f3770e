"""Structured logs: one JSON object per line, with the request, operation and instance ids where known.

The ids travel in context variables: the API sets the request id for each request, the
provisioning manager sets the operation and instance ids while it runs an operation.

Secrets in URLs stay out of the log: a console ticket (`?ticket=...` on the console WebSocket
URL) is replaced by `[redacted]` in every line, uvicorn's access and connection lines included
(`RedactSecrets` on uvicorn's loggers, and the JSON formatter for everything else).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
operation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("operation_id", default=None)
instance_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("instance_id", default=None)
_CONTEXT = {"request_id": request_id, "operation_id": operation_id, "instance_id": instance_id}

#: Query parameters whose values are credentials: the console's single-use ticket.
_SECRET_PARAMS = re.compile(r"(?i)([?&](?:ticket)=)[^&\s\"']*")


def redact(text: str) -> str:
    """`text` with the value of every secret query parameter replaced by `[redacted]`."""
    return _SECRET_PARAMS.sub(r"\1[redacted]", text)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message with `redact`, before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, var in _CONTEXT.items():
            value = var.get()
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure(level: int = logging.INFO) -> None:
    """JSON lines on stderr for every logger, uvicorn's included."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


@contextmanager
def operation_context(operation: object, instance: object) -> Iterator[None]:
    tokens = (operation_id.set(str(operation)), instance_id.set(str(instance)))
    try:
        yield
    finally:
        operation_id.reset(tokens[0])
        instance_id.reset(tokens[1])
