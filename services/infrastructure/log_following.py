"""Following the log: consumer positions, reading pages of events, and the one follower loop.

Every consumer of the log (a read model or a process manager) has a named position in
`zlh_positions`; positions only move forward, so several workers may share one.

`LogFollower` is how every consumer follows the log, and it never stops on one event. An event its
consumer cannot handle is tried again, with backoff, up to `MAX_ATTEMPTS` times; then it becomes a
dead letter (services.infrastructure.dead_letters) and is skipped, so everything after it still
flows. Failures of the infrastructure itself (the database or the event store unreachable, a table
not migrated yet) are not the event's fault: they pause the follower with capped backoff and never
count as attempts, so an outage cannot turn good events into dead letters.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from eventsourcing.persistence import InterfaceError, Notification, OperationalError

from services.infrastructure import dead_letters
from services.infrastructure.database import PortableCursor, ReadModelDB

log = logging.getLogger(__name__)

POSITIONS = "zlh_positions"
#: How many times a follower tries one event before it becomes a dead letter.
MAX_ATTEMPTS = 3
#: A failing follower waits the first of these seconds, doubling up to the second, before it tries again.
BACKOFF = (0.1, 10.0)
#: How long a process manager waits, once woken, before it reads the log (`LogFollower.settle`).
SETTLE = 0.05
#: Errors of the infrastructure, not of the event: they pause a follower and never count as attempts.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError,
    psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn, sqlite3.OperationalError,
    ConnectionError, TimeoutError,
)
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


def lock_positions(cur: PortableCursor, names: Sequence[str]) -> dict[str, int]:
    """Read (and on PostgreSQL lock, in name order) several positions at once, creating missing ones at 0."""
    cur.executemany(f"INSERT INTO {POSITIONS} (name, position) VALUES (%s, 0) ON CONFLICT (name) DO NOTHING",
                    [(n,) for n in names])
    marks = ", ".join(["%s"] * len(names))
    rows = cur.execute(f"SELECT name, position FROM {POSITIONS} WHERE name IN ({marks}) ORDER BY name FOR UPDATE",
                       list(names)).fetchall()
    return {r["name"]: int(r["position"]) for r in rows}


def advance_positions(cur: PortableCursor, positions: dict[str, int]) -> None:
    """Move several positions forward in one statement batch; never backward."""
    if positions:
        cur.executemany(
            f"UPDATE {POSITIONS} SET position = %s WHERE name = %s AND position < %s",
            [(p, n, p) for n, p in sorted(positions.items())])


#: What a projection group NOTIFYs (PostgreSQL) in the transaction that moves positions: read-your-writes
#: waiters of other processes listen to it (services/infrastructure/watcher.py).
POSITIONS_CHANNEL = "zlh_positions"


def notify_positions(cur: PortableCursor) -> None:
    """Tell listening processes, at this transaction's commit, that positions moved (PostgreSQL; else nothing)."""
    if cur.dialect == "postgres":
        cur.execute("SELECT pg_notify(%s, '')", (POSITIONS_CHANNEL,))


def advance_position(cur: PortableCursor, name: str, position: int) -> None:
    """Move a position forward; never backward (several workers may share one)."""
    cur.execute(
        f"INSERT INTO {POSITIONS} (name, position) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
        f"SET position = excluded.position WHERE {POSITIONS}.position < excluded.position",
        (name, position),
    )


class Wakeup(Protocol):
    """Wakes a follower when events are appended (`services.infrastructure.store.LogSignal`)."""

    def wait(self, timeout: float, stop: threading.Event | None = None) -> bool: ...


def follow_log(name: str, stop: threading.Event, drain_page: Callable[[], int],
               wakeup: Wakeup, after_drain: Callable[[], object] = lambda: None, settle: float = 0.0) -> None:
    """The loop of every log follower: drain pages, do `after_drain`, wait for news; until `stop`.

    `settle`: once woken, wait this long before reading, so the saves of a busy moment are read as
    one page (one position write, one `after_drain`) instead of one page each.

    Errors are logged and retried with capped exponential backoff, so a database
    outage pauses a follower instead of killing it.
    """
    first, cap = BACKOFF
    backoff = first
    while not stop.is_set():
        try:
            while not stop.is_set() and drain_page():
                pass
            after_drain()
            backoff = first
            # returns at once when `stop` is set, even if its notification came first
            if wakeup.wait(1.0, stop) and settle > 0:
                stop.wait(settle)
        except EventFailedError:  # logged with its attempt count where it failed
            stop.wait(backoff)
            backoff = min(backoff * 2, cap)
        except FollowingPausedError:
            continue  # the handler waited for capacity and gave up (stopping): read the page again, or stop
        except Exception:
            log.exception("%s failed; retrying in %.1fs", name, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, cap)


def read_log_page(log_: EventLog, cur: PortableCursor, after: int, limit: int) -> list[Notification]:
    """The notifications after position `after`, oldest first.

    On SQLite the page is read through `cur`, inside the caller's transaction: the
    library's own SQLite pool makes readers wait for its writer, and its writer may
    be waiting for our write lock, so reading through the pool here would deadlock.
    It also gives the page and the position update one consistent snapshot.
    """
    if not cur.holds_the_log:
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


class EventFailedError(Exception):
    """An event failed and has attempts left: the follower backs off and tries it again."""


class FollowingPausedError(Exception):
    """A handler cannot take this event now (no capacity, shutting down): the follower stops before it, without
    counting an attempt, and reads it again on its next page."""


class LogFollower:
    """Follows the log for one named consumer, handing it each notification of `topics` in order.

    A process manager reads `SETTLE` seconds after it is woken (see `follow_log`): under load, each
    save woke every process manager for a page, a position write and its sweep; now a busy moment
    costs one of each. The read models (`ProjectionGroup`) do not wait: read-your-writes waits for them.

    `handle` runs outside any read-model transaction (process managers record their effects in
    the event store, idempotently); the position moves past what was handled after each page, or
    up to a failing event. `after_drain` runs whenever the follower has caught up. A subclass may
    apply pages transactionally instead (`ProjectionRunner`).
    """

    settle = SETTLE

    def __init__(self, name: str, log_: EventLog, db: ReadModelDB,
                 handle: Callable[[Notification], object] | None = None, *,
                 topics: Collection[str] | None = None, page_size: int = 200, max_attempts: int = MAX_ATTEMPTS,
                 after_drain: Callable[[], object] | None = None) -> None:
        self.name, self.log, self.db = name, log_, db
        self.handle = handle
        self.topics = frozenset(topics) if topics is not None else None
        self.page_size, self.max_attempts = page_size, max_attempts
        self.after_drain = after_drain
        self._attempts: dict[tuple[str, int], dead_letters.Attempts] = {}

    def wanted(self, notification: Notification) -> bool:
        return self.topics is None or notification.topic in self.topics

    def position(self) -> int:
        return read_position(self.db, self.name)

    def run(self, stop: threading.Event, wakeup: Wakeup) -> None:
        """Follow the log until `stop` is set."""
        follow_log(self.name, stop, self.process_page, wakeup, after_drain=self._caught_up, settle=self.settle)

    def _caught_up(self) -> None:
        self.retry_dead_letters()
        if self.after_drain is not None:
            self.after_drain()

    # Process managers: handle each event, then move the position.

    def process_page(self) -> int:
        """Handle the next page; return how many events were read."""
        assert self.handle is not None, "a LogFollower needs a handler"
        start = self.position()
        page = self.log.recorder.select_notifications(start=start, limit=self.page_size, inclusive_of_start=False)
        last = start
        try:
            for notification in page:
                if self.wanted(notification):
                    self._handle_one(notification)
                last = notification.id
        finally:
            if last > start:
                with self.db.transaction() as cur:
                    advance_position(cur, self.name, last)
        return len(page)

    def _handle_one(self, notification: Notification) -> None:
        assert self.handle is not None
        try:
            self.handle(notification)
        except (*INFRASTRUCTURE_ERRORS, FollowingPausedError):
            raise
        except Exception as exc:
            attempts = self.failed(notification, exc)
            with self.db.transaction() as cur:
                self.dead_letter_or_retry(cur, notification, attempts)
        else:
            self.succeeded(notification)

    # Attempts and dead letters, shared with the transactional runner.

    def failed(self, notification: Notification, exc: BaseException, scope: str | None = None) -> dead_letters.Attempts:
        """Count a failed attempt at `notification`."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        key = (scope or self.name, notification.id)
        attempts = self._attempts.get(key) or dead_letters.Attempts(0, now, now, "")
        attempts.count += 1
        attempts.last_at, attempts.error = now, dead_letters.describe(exc)
        self._attempts[key] = attempts
        log.warning("%s: event %d (%s) failed, attempt %d of %d: %s", scope or self.name, notification.id,
                    notification.topic, attempts.count, self.max_attempts, attempts.error)
        return attempts

    def succeeded(self, notification: Notification, scope: str | None = None) -> None:
        self._attempts.pop((scope or self.name, notification.id), None)

    def dead_letter_or_retry(self, cur: PortableCursor, notification: Notification, attempts: dead_letters.Attempts,
                             scope: str | None = None) -> None:
        """With attempts left, raise `EventFailedError` (the follower backs off); else record the dead letter."""
        if attempts.count < self.max_attempts:
            raise EventFailedError(f"event {notification.id} failed: {attempts.error}")
        dead_letters.record(cur, scope or self.name, notification, attempts)
        self._attempts.pop((scope or self.name, notification.id), None)
        log.error("%s: event %d (%s %s v%d) is a dead letter after %d attempts: %s", scope or self.name,
                  notification.id, notification.topic, notification.originator_id, notification.originator_version,
                  attempts.count, attempts.error)

    def retry_dead_letters(self) -> int:
        """Handle again the dead letters an operator asked to retry (`zlh projections retry NAME`)."""
        if self.handle is None:
            return 0
        positions = dead_letters.retry_requested(self.db, self.name)
        for position in positions:
            page = self.log.recorder.select_notifications(start=position, limit=1)
            try:
                if page and page[0].id == position:
                    self.handle(page[0])
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception as exc:
                with self.db.transaction() as cur:
                    dead_letters.failed_again(cur, self.name, position, dead_letters.describe(exc))
                log.error("%s: dead letter %d failed again: %s", self.name, position, exc)
            else:
                with self.db.transaction() as cur:
                    dead_letters.resolve(cur, self.name, position)
                log.info("%s: dead letter %d applied", self.name, position)
        return len(positions)
