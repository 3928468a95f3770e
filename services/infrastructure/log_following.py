"""Following the log: consumer positions, reading pages of events, and the follower loop.

Every consumer of the log (a projection or a process manager) has a named position in
`zlh_positions`; positions only move forward, so several workers may share one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from eventsourcing.persistence import Notification

from services.infrastructure.database import PortableCursor, ReadModelDB

log = logging.getLogger(__name__)

POSITIONS = "zlh_positions"
SQLITE_EVENTS = "stored_events"  # the library's events table on SQLite (it ignores the app name there)


class EventLog(Protocol):
    """The parts of an `eventsourcing` application a runner reads."""

    recorder: Any
    mapper: Any


def create_positions_table(cur: PortableCursor) -> None:
    cur.execute(f"CREATE TABLE IF NOT EXISTS {POSITIONS} (name TEXT PRIMARY KEY, position BIGINT NOT NULL)")


def ensure_position(cur: PortableCursor, name: str) -> None:
    cur.execute(f"INSERT INTO {POSITIONS} (name, position) VALUES (%s, 0) ON CONFLICT (name) DO NOTHING", (name,))


def lock_position(cur: PortableCursor, name: str) -> int:
    """Read (and on PostgreSQL lock) a position row, creating it at 0 if missing."""
    ensure_position(cur, name)
    row = cur.execute(f"SELECT position FROM {POSITIONS} WHERE name = %s FOR UPDATE", (name,)).fetchone()
    return int(row["position"]) if row else 0


def advance_position(cur: PortableCursor, name: str, position: int) -> None:
    """Move a position forward; never backward (several workers may share one)."""
    cur.execute(
        f"INSERT INTO {POSITIONS} (name, position) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
        f"SET position = excluded.position WHERE {POSITIONS}.position < excluded.position",
        (name, position),
    )


def follow_log(name: str, stop: threading.Event, drain_page: Callable[[], int],
               wait_for_events: Callable[[float], object], after_drain: Callable[[], object] = lambda: None) -> None:
    """The loop of every log follower: drain pages, do `after_drain`, wait for news; until `stop`.

    Errors are logged and retried with capped exponential backoff, so a database
    outage pauses a follower instead of killing it.
    """
    backoff = 0.1
    while not stop.is_set():
        try:
            while not stop.is_set() and drain_page():
                pass
            after_drain()
            backoff = 0.1
            wait_for_events(1.0)
        except Exception:
            log.exception("%s failed; retrying in %.1fs", name, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)


def read_log_page(log_: EventLog, cur: PortableCursor, after: int, limit: int) -> list[Notification]:
    """The notifications after position `after`, oldest first.

    On SQLite the page is read through `cur`, inside the caller's transaction: the
    library's own SQLite pool makes readers wait for its writer, and its writer may
    be waiting for our write lock, so reading through the pool here would deadlock.
    It also gives the page and the position update one consistent snapshot.
    """
    if cur.dialect == "postgres":
        return list(log_.recorder.select_notifications(start=after, limit=limit, inclusive_of_start=False))
    rows = cur.execute(
        f"SELECT rowid AS id, originator_id, originator_version, topic, state FROM {SQLITE_EVENTS} "
        "WHERE rowid > %s ORDER BY rowid LIMIT %s",
        (after, limit),
    ).fetchall()
    convert = log_.recorder.convert_originator_id
    return [
        Notification(id=r["id"], originator_id=convert(r["originator_id"]),
                     originator_version=r["originator_version"], topic=r["topic"], state=r["state"])
        for r in rows
    ]


def read_position(db: ReadModelDB, name: str) -> int:
    """One consumer's position in the log (0 before its first page)."""
    rows = db.query(f"SELECT position FROM {POSITIONS} WHERE name = %s", (name,))
    return int(rows[0]["position"]) if rows else 0


def read_positions(db: ReadModelDB) -> dict[str, int]:
    return {r["name"]: int(r["position"]) for r in db.query(f"SELECT name, position FROM {POSITIONS}")}
