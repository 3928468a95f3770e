"""Auditors' view of the log: any stream's events, oldest first, as plain JSON."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

from projections.base import iso
from services.store import ZLH

_ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def to_json(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def stream_events(app: ZLH, stream_id: UUID) -> list[dict[str, Any]]:
    """`[{"version", "type", "timestamp", "data"}]` for one stream, oldest first."""
    events = []
    for stored in app.recorder.select_events(stream_id):
        event = app.mapper.to_domain_event(stored)
        data = {k: to_json(v) for k, v in vars(event).items() if k not in _ENVELOPE}
        events.append({
            "version": event.originator_version,
            "type": stored.topic,
            "timestamp": iso(event.timestamp),
            "data": data,
        })
    return events
