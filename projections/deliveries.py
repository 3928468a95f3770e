"""`DeliveriesProjection`: the notification delivery log, for retries, queues and metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.delivery import Delivery
from projections.base import Cursor, Database, Projection, Table, iso

TABLE = "rm_deliveries"


class DeliveriesProjection(Projection):
    name = "deliveries"
    tables = (
        Table(
            TABLE,
            "id TEXT PRIMARY KEY, source_id TEXT NOT NULL, channel TEXT NOT NULL, kind TEXT NOT NULL, "
            "status TEXT NOT NULL, attempts INTEGER NOT NULL, retry_at TEXT, detail TEXT, "
            "created_at TEXT NOT NULL, updated_at TEXT NOT NULL",
            indexes=(("status_retry", "status, retry_at"),),
        ),
    )
    topics = frozenset({Delivery.Requested.TOPIC, Delivery.Attempting.TOPIC, Delivery.Sent.TOPIC,
                        Delivery.RetryScheduled.TOPIC, Delivery.Failed.TOPIC, Delivery.NotSent.TOPIC})

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        table, at, did = t[TABLE], iso(event.timestamp), str(event.originator_id)
        if isinstance(event, Delivery.Requested):
            cur.execute(f"INSERT INTO {table} (id, source_id, channel, kind, status, attempts, created_at, "
                        "updated_at) VALUES (%s, %s, %s, %s, 'pending', 0, %s, %s)",
                        (did, str(event.source_id), event.channel, event.kind, at, at))
            return
        if isinstance(event, Delivery.Attempting):
            assignments, params = "status = 'attempting', attempts = %s", (event.attempt,)
        elif isinstance(event, Delivery.Sent):
            assignments, params = "status = 'sent', detail = %s, retry_at = NULL", (event.detail,)
        elif isinstance(event, Delivery.RetryScheduled):
            assignments, params = "status = 'retrying', detail = %s, retry_at = %s", (event.detail,
                                                                                        iso(event.retry_at))
        elif isinstance(event, Delivery.Failed):
            assignments, params = "status = 'failed', detail = %s, retry_at = NULL", (event.detail,)
        else:
            assignments, params = "status = 'not_sent', detail = %s, retry_at = NULL", (event.reason,)
        cur.execute(f"UPDATE {table} SET {assignments}, updated_at = %s WHERE id = %s", (*params, at, did))


def due(db: Database, now: datetime, stale_before: datetime) -> list[str]:
    """Deliveries to (re)attempt: retries now due, and ones a crashed worker left pending or mid-send."""
    rows = db.query(
        f"SELECT id FROM {TABLE} WHERE (status = 'retrying' AND retry_at <= %s) "
        "OR (status IN ('pending', 'attempting') AND updated_at <= %s) ORDER BY updated_at",
        (iso(now), iso(stale_before)),
    )
    return [r["id"] for r in rows]


def counts(db: Database) -> list[dict[str, Any]]:
    return db.query(f"SELECT channel, status, COUNT(*) AS n FROM {TABLE} GROUP BY channel, status")
