"""Structured logs carry the ids in context; the API echoes a request id."""

from __future__ import annotations

import json
import logging

from services.infrastructure import logs


def test_json_lines_carry_context_ids() -> None:
    record = logging.LogRecord("zlh.test", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    token = logs.request_id.set("req-1")
    try:
        with logs.operation_context("op-1", "inst-1"):
            line = json.loads(logs.JsonFormatter().format(record))
    finally:
        logs.request_id.reset(token)
    assert line["message"] == "hello world" and line["level"] == "info" and line["ts"].endswith("Z")
    assert (line["request_id"], line["operation_id"], line["instance_id"]) == ("req-1", "op-1", "inst-1")
    assert "operation_id" not in json.loads(logs.JsonFormatter().format(record))
