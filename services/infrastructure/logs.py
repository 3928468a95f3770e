"""Structured logs: one JSON object per line, with the request, operation and instance ids where known.

The ids travel in context variables: the API sets the request id for each request, the
provisioning manager sets the operation and instance ids while it runs an operation.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
operation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("operation_id", default=None)
instance_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("instance_id", default=None)
_CONTEXT = {"request_id": request_id, "operation_id": operation_id, "instance_id": instance_id}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in _CONTEXT.items():
            value = var.get()
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
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


@contextmanager
def operation_context(operation: object, instance: object) -> Iterator[None]:
    tokens = (operation_id.set(str(operation)), instance_id.set(str(instance)))
    try:
        yield
    finally:
        operation_id.reset(tokens[0])
        instance_id.reset(tokens[1])
