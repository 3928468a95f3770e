"""RFC 9457 problem documents: one shape for the API and the node agent."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

PROBLEM_JSON = "application/problem+json"


def problem_document(status: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """`{"type", "title", "status", "detail", "code", ...}` with a stable `code`."""
    return {
        "type": f"https://docs.zlh.example/problems/{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
