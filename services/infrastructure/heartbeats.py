"""Worker heartbeats for running operations: operational data, not domain events.

A provisioning worker beats for each operation it is executing every few seconds
(`HeartbeatWriter`); the controller takes an operation to be stale when neither an
event on its stream nor a heartbeat arrived for `ZLH_OPERATION_STALE_AFTER`. Beats
live in one small table (`zlh_operation_heartbeats`, created by `zlh migrate`), so a
long step (a big backup, a slow start) does not put an event in the log per beat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from uuid import UUID

from projections.base import iso, parse_iso
from services.infrastructure.database import PortableCursor, ReadModelDB

TABLE = "zlh_operation_heartbeats"

log = logging.getLogger(__name__)


def create_heartbeats_table(cur: PortableCursor) -> None:
    cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (operation_id TEXT PRIMARY KEY, worker_id TEXT NOT NULL, "
                "beat_at TEXT NOT NULL)")


def beat(db: ReadModelDB, operation_ids: Iterable[UUID], worker_id: str, at: datetime | None = None) -> None:
    stamp = iso(at or datetime.now(UTC))
    with db.transaction() as cur:
        for operation_id in operation_ids:
            cur.execute(
                f"INSERT INTO {TABLE} (operation_id, worker_id, beat_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (operation_id) DO UPDATE SET worker_id = excluded.worker_id, beat_at = excluded.beat_at",
                (str(operation_id), worker_id, stamp),
            )


def last_beats(db: ReadModelDB) -> dict[UUID, datetime]:
    rows = db.query(f"SELECT operation_id, beat_at FROM {TABLE}")
    return {UUID(r["operation_id"]): parse_iso(r["beat_at"]) for r in rows}


def forget(db: ReadModelDB, finished: Iterable[UUID]) -> None:
    with db.transaction() as cur:
        for operation_id in finished:
            cur.execute(f"DELETE FROM {TABLE} WHERE operation_id = %s", (str(operation_id),))


def heartbeat_every(stale_after: float) -> float:
    """Beat often enough that a live worker is never taken for a stale one: four beats per period."""
    return max(min(stale_after / 4, 30.0), 0.05)


class HeartbeatWriter:
    """Beats every `every` seconds for the operations `active()` returns, until `stop` is set."""

    def __init__(self, db: ReadModelDB, worker_id: str, active: Callable[[], set[UUID]], every: float) -> None:
        self.db, self.worker_id, self.active, self.every = db, worker_id, active, every
        self._beating: set[UUID] = set()

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.every):
            try:
                current = set(self.active())
                if current:
                    beat(self.db, current, self.worker_id)
                if self._beating - current:
                    forget(self.db, self._beating - current)
                self._beating = current
            except Exception:
                log.exception("could not record heartbeats; retrying")
