"""When each node's agent last answered: operational data, not domain events.

The node monitor probes every node every few seconds; recording each answer as an event would
fill the log with noise, so the last answer lives in one small table (`zlh_node_heartbeats`,
made by `zlh migrate`), as operation heartbeats do. Only the transitions (`unreachable`,
recovered) are events on the `Node`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from projections.base import iso, parse_iso
from services.infrastructure.database import PortableCursor, ReadModelDB

TABLE = "zlh_node_heartbeats"


def create_node_heartbeats_table(cur: PortableCursor) -> None:
    cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (node_id TEXT PRIMARY KEY, seen_at TEXT NOT NULL)")


def seen(db: ReadModelDB, node_id: UUID, at: datetime | None = None) -> None:
    with db.transaction() as cur:
        cur.execute(f"INSERT INTO {TABLE} (node_id, seen_at) VALUES (%s, %s) "
                    "ON CONFLICT (node_id) DO UPDATE SET seen_at = excluded.seen_at",
                    (str(node_id), iso(at or datetime.now(UTC))))


def last_seen(db: ReadModelDB) -> dict[str, datetime]:
    return {r["node_id"]: parse_iso(r["seen_at"]) for r in db.query(f"SELECT node_id, seen_at FROM {TABLE}")}
