"""Runs a projection: catch-up from its position, live following, and shadow rebuilds.

Every page of events is applied in one read-model transaction together with the
projection's new position (`zlh_positions`), so a crash never applies an event
twice or skips one. The position row is locked (`FOR UPDATE` on PostgreSQL,
`BEGIN IMMEDIATE` on SQLite) before the page is read, so two runners of the same
projection, or a runner and a rebuild swap, serialize instead of racing.

A rebuild writes into `TABLE__shadow` tables from position 0 while the live tables
keep serving and following; when the shadow has caught up, one transaction takes
the live position lock, applies the last events, drops the live tables and renames
the shadows into place. Readers see the old complete table or the new complete one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from projections.base import Projection, Table
from services.infrastructure.database import PortableCursor, ReadModelDB
from services.infrastructure.log_following import (
    POSITIONS,
    EventLog,
    advance_position,
    ensure_position,
    follow_log,
    lock_position,
    read_log_page,
)

log = logging.getLogger(__name__)

SHADOW = "__shadow"


def create_tables(cur: PortableCursor, tables: tuple[Table, ...], suffix: str = "") -> None:
    for table in tables:
        physical = table.name + suffix
        cur.execute(f"CREATE TABLE IF NOT EXISTS {physical} ({table.columns})")
        for index_suffix, columns in table.indexes:
            cur.execute(f"CREATE INDEX IF NOT EXISTS {physical}_{index_suffix} ON {physical} ({columns})")


@dataclass
class RebuildProgress:
    """What a rebuild reports while it runs."""

    name: str
    state: str = "idle"  # idle | running | swapping | done | failed
    position: int = 0
    head: int = 0
    events_per_second: float = 0.0
    started_at: float = 0.0
    error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def eta_seconds(self) -> float | None:
        if self.state != "running" or self.events_per_second <= 0:
            return None
        return max(0.0, (self.head - self.position) / self.events_per_second)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "position": self.position,
            "head": self.head,
            "events_per_second": round(self.events_per_second, 1),
            "eta_seconds": self.eta_seconds(),
            "error": self.error,
        }


class ProjectionRunner:
    """Applies one projection's events from the log to its tables."""

    def __init__(self, log_: EventLog, db: ReadModelDB, projection: Projection, page_size: int = 500,
                 on_commit: Callable[[], None] | None = None) -> None:
        self.log = log_
        self.on_commit = on_commit
        self._on_progress: Callable[[RebuildProgress], None] | None = None
        self.db = db
        self.projection = projection
        self.page_size = page_size
        self.progress = RebuildProgress(projection.name)
        self._live_names = {t.name: t.name for t in projection.tables}
        self._shadow_names = {t.name: t.name + SHADOW for t in projection.tables}

    @property
    def name(self) -> str:
        return self.projection.name

    def migrate(self, cur: PortableCursor) -> None:
        create_tables(cur, self.projection.tables)
        ensure_position(cur, self.name)

    def position(self) -> int:
        rows = self.db.query(f"SELECT position FROM {POSITIONS} WHERE name = %s", (self.name,))
        return int(rows[0]["position"]) if rows else 0

    # Live following.

    def process_page(self) -> int:
        """Apply the next page of events to the live tables; return how many events were read."""
        with self.db.transaction() as cur:
            read = self._apply_page(cur, self.name, self._live_names)
        if read:
            self.projection.after_commit(self.db)
            if self.on_commit is not None:
                self.on_commit()
        return read

    def catch_up(self) -> int:
        """Apply pages until the log is exhausted; return the position reached."""
        while self.process_page():
            pass
        return self.position()

    def _apply_page(self, cur: PortableCursor, position_name: str, names: dict[str, str]) -> int:
        start = lock_position(cur, position_name)
        page = read_log_page(self.log, cur, start, self.page_size)
        for notification in page:
            if notification.topic in self.projection.topics:
                event = self.log.mapper.to_domain_event(notification)
                self.projection.apply(cur, event, names)
        if page:
            advance_position(cur, position_name, page[-1].id)
        return len(page)

    def run(self, stop: threading.Event, wait_for_events: Callable[[float], object]) -> None:
        """Follow the log until `stop` is set."""
        follow_log(f"projection {self.name}", stop, self.process_page, wait_for_events)

    # Rebuild from position 0 into shadow tables, then swap.

    def rebuild(self, on_progress: Callable[[RebuildProgress], None] | None = None) -> RebuildProgress:
        """Rebuild from 0 while the live tables keep serving; return the final progress.

        `on_progress` is called after every page with the position, head, events/s and ETA.
        """
        self._on_progress = on_progress
        progress = self.progress
        shadow_position = self.name + SHADOW
        progress.state, progress.error, progress.position = "running", None, 0
        progress.started_at = time.monotonic()
        try:
            with self.db.transaction() as cur:
                for table in self.projection.tables:
                    cur.execute(f"DROP TABLE IF EXISTS {table.name}{SHADOW}")
                create_tables(cur, self.projection.tables, SHADOW)
                cur.execute(f"DELETE FROM {POSITIONS} WHERE name = %s", (shadow_position,))
            while True:
                with self.db.transaction() as cur:
                    read = self._apply_page(cur, shadow_position, self._shadow_names)
                    position = lock_position(cur, shadow_position)
                self._report(position)
                if read < self.page_size:
                    break
            progress.state = "swapping"
            with self.db.transaction() as cur:
                lock_position(cur, self.name)
                while self._apply_page(cur, shadow_position, self._shadow_names):
                    pass
                position = lock_position(cur, shadow_position)
                self._swap(cur)
                cur.execute(f"UPDATE {POSITIONS} SET position = %s WHERE name = %s", (position, self.name))
                cur.execute(f"DELETE FROM {POSITIONS} WHERE name = %s", (shadow_position,))
            self.projection.after_commit(self.db)
            if self.on_commit is not None:
                self.on_commit()
            self._report(position)
            progress.state = "done"
        except Exception as exc:
            progress.state, progress.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("rebuild of %s failed", self.name)
            raise
        return progress

    def _report(self, position: int) -> None:
        progress = self.progress
        progress.position = position
        progress.head = self.log.recorder.max_notification_id() or 0
        elapsed = max(time.monotonic() - progress.started_at, 1e-6)
        progress.events_per_second = position / elapsed
        if self._on_progress is not None:
            self._on_progress(progress)

    def _swap(self, cur: PortableCursor) -> None:
        for table in self.projection.tables:
            shadow = table.name + SHADOW
            cur.execute(f"DROP TABLE IF EXISTS {table.name}")
            cur.execute(f"ALTER TABLE {shadow} RENAME TO {table.name}")
            for index_suffix, columns in table.indexes:
                if cur.dialect == "postgres":
                    cur.execute(f"ALTER INDEX {shadow}_{index_suffix} RENAME TO {table.name}_{index_suffix}")
                else:
                    cur.execute(f"DROP INDEX IF EXISTS {shadow}_{index_suffix}")
                    cur.execute(f"CREATE INDEX {table.name}_{index_suffix} ON {table.name} ({columns})")
