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

A runner is a `LogFollower`: an event the projection cannot apply is retried and then becomes a
dead letter, written in the same transaction as the position that skips it. A page is applied
in one go; only when something in it fails is it applied again event by event, each under a
savepoint, so one bad event costs its own rollback and nothing else. A rebuild applies every
event again, dead letters included: its own dead letters then replace the live ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import Notification

from projections.base import Projection, Table
from services.infrastructure import dead_letters
from services.infrastructure.database import PortableCursor, ReadModelDB
from services.infrastructure.log_following import (
    INFRASTRUCTURE_ERRORS,
    POSITIONS,
    EventFailedError,
    EventLog,
    LogFollower,
    advance_position,
    advance_positions,
    ensure_position,
    lock_position,
    lock_positions,
    notify_positions,
    read_log_page,
    read_position,
    read_positions,
)

log = logging.getLogger(__name__)

SHADOW = "__shadow"


def create_tables(cur: PortableCursor, tables: tuple[Table, ...], suffix: str = "", indexes: bool = True) -> None:
    for table in tables:
        physical = table.name + suffix
        cur.execute(f"CREATE TABLE IF NOT EXISTS {physical} ({table.columns})")
        for index_suffix, columns in table.indexes if indexes else ():
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


class ProjectionRunner(LogFollower):
    """Applies one projection's events from the log to its tables."""

    settle = 0.0  # read-your-writes waits for the read models: no delay here

    def __init__(self, log_: EventLog, db: ReadModelDB, projection: Projection, page_size: int = 500,
                 on_commit: Callable[[], None] | None = None) -> None:
        super().__init__(projection.name, log_, db, topics=projection.topics, page_size=page_size)
        self.on_commit = on_commit
        self._on_progress: Callable[[RebuildProgress], None] | None = None
        self.projection = projection
        self.progress = RebuildProgress(projection.name)
        self.live_names = {t.name: t.name for t in projection.tables}
        self._shadow_names = {t.name: t.name + SHADOW for t in projection.tables}

    def migrate(self, cur: PortableCursor, indexes: bool = True) -> None:
        """The live tables and the position row. `indexes=False` before a version's rebuild: an old table may
        lack a column a new index names; the rebuild's shadow tables bring the new indexes with them."""
        create_tables(cur, self.projection.tables, indexes=indexes)
        ensure_position(cur, self.name)

    # Live following.

    def process_page(self) -> int:
        """Apply the next page of events to the live tables; return how many events were read."""
        read = self._page(self.name, self.live_names)
        if read:
            self.projection.after_commit(self.db)
            if self.on_commit is not None:
                self.on_commit()
        return read

    def catch_up(self) -> int:
        """Apply pages until the log is exhausted (failing events retried until dead letters); the position."""
        while True:
            try:
                if not self.process_page():
                    return self.position()
            except EventFailedError:
                continue

    def retry_dead_letters(self) -> int:
        """A read model applies its dead letters again by a rebuild (`zlh projections retry NAME`)."""
        return 0

    def _page(self, position_name: str, names: dict[str, str]) -> int:
        """One page in one transaction: at once, or event by event when something in it fails."""
        try:
            with self.db.transaction() as cur:
                read, failure = self._apply_page(cur, position_name, names, careful=False)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception:
            with self.db.transaction() as cur:
                read, failure = self._apply_page(cur, position_name, names, careful=True)
        if failure is not None:
            raise failure
        return read

    def _apply_page(self, cur: PortableCursor, position_name: str, names: dict[str, str],
                    careful: bool) -> tuple[int, EventFailedError | None]:
        """Apply the next page in `cur` and move the position past what was applied or dead-lettered.

        Not `careful`: any failure propagates (the caller rolls back and applies the page carefully).
        `careful`: each event under a savepoint; a failing event with attempts left stops the page
        there and is returned, to be raised once what came before it is committed.
        """
        start = lock_position(cur, position_name)
        page = read_log_page(self.log, cur, start, self.page_size)
        last, failure = self.apply_notifications(cur, page, names, position_name, careful)
        if last is not None and last > start:
            advance_position(cur, position_name, last)
        return len(page), failure

    def apply_notifications(self, cur: PortableCursor, notifications: Sequence[Notification],
                            names: dict[str, str], scope: str, careful: bool,
                            decoded: dict[int, Any] | None = None) -> tuple[int | None, EventFailedError | None]:
        """Apply the events of `notifications` this projection reads; the id its position may move to (None:
        nothing), and, `careful`, the failure that stopped it there (see `_apply_page`). `decoded` caches
        the decoded events by notification id, for projections sharing one page (`ProjectionGroup`)."""
        last = None
        apply, topics = self.projection.apply, self.topics
        for notification in notifications:
            if topics is None or notification.topic in topics:
                if not careful:
                    apply(cur, self._decode(notification, decoded), names)
                else:
                    failure = self._apply_carefully(cur, notification, names, scope, decoded)
                    if failure is not None:
                        return last, failure
            last = notification.id
        return last, None

    def _decode(self, notification: Notification, decoded: dict[int, Any] | None) -> Any:
        if decoded is None:
            return self.log.mapper.to_domain_event(notification)
        event = decoded.get(notification.id)
        if event is None:
            event = decoded[notification.id] = self.log.mapper.to_domain_event(notification)
        return event

    def _apply(self, cur: PortableCursor, notification: Notification, names: dict[str, str],
               decoded: dict[int, Any] | None = None) -> None:
        self.projection.apply(cur, self._decode(notification, decoded), names)

    def _apply_carefully(self, cur: PortableCursor, notification: Notification, names: dict[str, str],
                         scope: str, decoded: dict[int, Any] | None = None) -> EventFailedError | None:
        try:
            with cur.savepoint():
                self._apply(cur, notification, names, decoded)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as exc:
            attempts = self.failed(notification, exc, scope)
            try:
                self.dead_letter_or_retry(cur, notification, attempts, scope)
            except EventFailedError as failure:
                return failure
        else:
            self.succeeded(notification, scope)
        return None

    # Rebuild from position 0 into shadow tables, then swap.

    def rebuild(self, on_progress: Callable[[RebuildProgress], None] | None = None) -> RebuildProgress:
        """Rebuild from 0 while the live tables keep serving; return the final progress.

        `on_progress` is called after every page with the position, head, events/s and ETA.
        """
        try:
            self.prepare_shadow(on_progress)
            while True:
                try:
                    read = self._page(self.shadow_position, self._shadow_names)
                except EventFailedError:
                    continue  # tried again at once, until applied or a dead letter
                self._report(read_position(self.db, self.shadow_position))
                if read < self.page_size:
                    break
            self.swap_in()
        except Exception as exc:
            self.rebuild_failed(exc)
            raise
        return self.progress

    @property
    def shadow_position(self) -> str:
        return self.name + SHADOW

    def prepare_shadow(self, on_progress: Callable[[RebuildProgress], None] | None = None,
                       cur: PortableCursor | None = None) -> None:
        """Empty shadow tables and a shadow position at 0 (the start of a rebuild)."""
        self._on_progress = on_progress
        progress = self.progress
        progress.state, progress.error, progress.position = "running", None, 0
        progress.started_at = time.monotonic()
        if cur is None:
            with self.db.transaction() as own:
                self.prepare_shadow(on_progress, own)
            return
        for table in self.projection.tables:
            cur.execute(f"DROP TABLE IF EXISTS {table.name}{SHADOW}")
        create_tables(cur, self.projection.tables, SHADOW)
        cur.execute(f"DELETE FROM {POSITIONS} WHERE name = %s", (self.shadow_position,))
        dead_letters.discard(cur, self.shadow_position)

    def swap_in(self) -> None:
        """The end of a rebuild: under the live position's lock, the last events, then the shadows swapped in."""
        shadow_position = self.shadow_position
        self.progress.state = "swapping"
        with self.db.transaction() as cur:
            lock_position(cur, self.name)
            while True:
                read, failure = self._apply_page(cur, shadow_position, self._shadow_names, careful=True)
                if not read and failure is None:
                    break
            position = lock_position(cur, shadow_position)
            self._swap(cur)
            cur.execute(f"UPDATE {POSITIONS} SET position = %s WHERE name = %s", (position, self.name))
            cur.execute(f"DELETE FROM {POSITIONS} WHERE name = %s", (shadow_position,))
            dead_letters.replace_with_rebuilt(cur, self.name, shadow_position)
            notify_positions(cur)
        self.projection.after_commit(self.db)
        if self.on_commit is not None:
            self.on_commit()
        self._report(position)
        self.progress.state = "done"

    def rebuild_failed(self, exc: BaseException) -> None:
        self.progress.state, self.progress.error = "failed", f"{type(exc).__name__}: {exc}"
        log.exception("rebuild of %s failed", self.name)

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


class ProjectionGroup(LogFollower):
    """Follows the log once for every projection: one page read, one transaction, every position in it.

    Each projection following the log on its own costs a transaction per projection per page (its
    position locked, the page read, its position moved), most of them for pages it has nothing to do
    with. The group reads a page once, decodes each event once, and, in one transaction, lets each
    projection apply what it reads, then moves every position that moved in one statement.

    On PostgreSQL the page is first applied in pipeline mode, with no savepoint: the statements go out
    without waiting for each answer (a round trip per statement was most of the cost). If anything in it
    fails, that transaction is rolled back and the page applied again the careful way: each projection
    under a savepoint (one projection's failure costs its own rollback: it then applies the page event
    by event, and its own dead letters and attempts work as they do alone). A projection that stopped
    at a failing event with attempts left keeps its position there; the next page starts at the lowest
    position, and each projection skips what it has already applied.

    `shadow=True` fills the projections' shadow tables and positions instead of the live ones: that is
    `rebuild_all`, one read of the log for every projection being rebuilt.
    """

    settle = 0.0  # read-your-writes waits for the read models: no delay here

    def __init__(self, runners: Sequence[ProjectionRunner], log_: EventLog, db: ReadModelDB, page_size: int = 500,
                 on_commit: Callable[[dict[str, int]], None] | None = None, shadow: bool = False) -> None:
        super().__init__("projections", log_, db, page_size=page_size)
        self.runners = list(runners)
        self.on_commit = on_commit
        self.shadow = shadow
        self._position_of = {r.name: (r.shadow_position if shadow else r.name) for r in self.runners}
        self._names = sorted(self._position_of.values())
        self._pipeline_failures = 0

    def process_page(self) -> int:
        """Apply the next page to every projection; return how many events were read."""
        committed: dict[str, int] = {}
        try:
            read, touched, failures = self._pipelined_page(committed)
        except _RetryCarefully:
            with self.db.transaction() as cur:
                read, touched, failures = self._apply_page(cur, committed, careful=True)
        except INFRASTRUCTURE_ERRORS:
            raise
        if not self.shadow:
            for runner in touched:
                runner.projection.after_commit(self.db)
            if self.on_commit is not None:
                self.on_commit(committed)  # every projection's position as committed (read-your-writes waiters)
        if failures:
            raise failures[0]  # committed what came before; the follower backs off and tries again
        return read

    def _pipelined_page(self, committed: dict[str, int]) -> tuple[int, list[ProjectionRunner], list[EventFailedError]]:
        """The fast path: the whole page at once (pipelined on PostgreSQL); `_RetryCarefully` if anything failed."""
        if self._pipeline_failures:  # the last page failed: go carefully until a page goes through
            raise _RetryCarefully
        try:
            with self.db.transaction(pipeline=True) as cur:
                result = self._apply_page(cur, committed, careful=False)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as exc:
            committed.clear()
            self._pipeline_failures = 1
            raise _RetryCarefully from exc
        return result

    def _apply_page(self, cur: PortableCursor, committed: dict[str, int], careful: bool
                    ) -> tuple[int, list[ProjectionRunner], list[EventFailedError]]:
        positions = lock_positions(cur, self._names)
        start = min(positions.values())
        page = read_log_page(self.log, cur, start, self.page_size)
        touched: list[ProjectionRunner] = []
        failures: list[EventFailedError] = []
        moved: dict[str, int] = {}
        decoded: dict[int, Any] = {}
        for index, runner in enumerate(self.runners):
            name = self._position_of[runner.name]
            at = positions[name]
            mine = page if at <= start else [n for n in page if n.id > at]
            if not mine:
                continue
            if runner.topics is not None and not any(n.topic in runner.topics for n in mine):
                moved[name] = mine[-1].id
                continue
            names = runner._shadow_names if self.shadow else runner.live_names
            if not careful:  # any failure rolls the whole page back (see `process_page`)
                last, failure = runner.apply_notifications(cur, mine, names, name, careful=False, decoded=decoded)
            else:
                try:
                    with cur.savepoint(f"zlh_projection_{index}"):
                        last, failure = runner.apply_notifications(cur, mine, names, name, careful=False,
                                                                   decoded=decoded)
                except INFRASTRUCTURE_ERRORS:
                    raise
                except Exception:
                    last, failure = runner.apply_notifications(cur, mine, names, name, careful=True,
                                                               decoded=decoded)
            touched.append(runner)
            if failure is not None:
                failures.append(failure)
            if last is not None:
                moved[name] = last
        advance_positions(cur, moved)
        if moved and not self.shadow:
            notify_positions(cur)
        if not careful or not failures:
            self._pipeline_failures = 0
        for runner in self.runners:
            name = self._position_of[runner.name]
            committed[runner.name] = moved.get(name, positions[name])
        return len(page), touched, failures


class _RetryCarefully(Exception):
    """The fast path of a page failed: apply it again with savepoints, projection by projection."""


#: Events per page when rebuilding: large pages, each in one transaction.
REBUILD_PAGE = 5000


def rebuild_all(runners: Sequence[ProjectionRunner], log_: EventLog, db: ReadModelDB,
                on_progress: Callable[[RebuildProgress], None] | None = None,
                page_size: int = REBUILD_PAGE) -> list[RebuildProgress]:
    """Rebuild several projections from 0 reading the log once: shadows filled by one `ProjectionGroup`, then
    each swapped in as `ProjectionRunner.rebuild` does. The live tables keep serving meanwhile."""
    runners = list(runners)
    if not runners:
        return []
    try:
        with db.transaction() as cur:
            for runner in runners:
                runner.prepare_shadow(None, cur)
        group = ProjectionGroup(runners, log_, db, page_size=page_size, shadow=True)
        started = time.monotonic()
        while True:
            try:
                read = group.process_page()
            except EventFailedError:
                continue  # tried again at once, until applied or a dead letter
            if on_progress is not None:
                positions = read_positions(db)
                progress = RebuildProgress("all", "running", min(positions.get(r.shadow_position, 0) for r in runners),
                                           log_.recorder.max_notification_id() or 0, started_at=started)
                progress.events_per_second = progress.position / max(time.monotonic() - started, 1e-6)
                on_progress(progress)
            if read < page_size:
                break
        elapsed = max(time.monotonic() - started, 1e-6)
        for runner in runners:
            runner.progress.started_at = time.monotonic() - elapsed
            runner.swap_in()
    except Exception as exc:
        for runner in runners:
            if runner.progress.state != "done":
                runner.rebuild_failed(exc)
        raise
    return [runner.progress for runner in runners]
