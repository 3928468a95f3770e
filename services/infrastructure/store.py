"""The durable log: one `eventsourcing` application holding every aggregate.

One application means one notification log, so process managers and projections
follow a single ordered sequence, and a save that touches several aggregates
(an operation, its instance and a name claim) is one transaction.

`CREATE_TABLE` is always off here: tables are made by `zlh migrate` only, so many
processes starting at once never race on DDL. `POSTGRES_ENABLE_DB_FUNCTIONS` is
never set: the default insert path locks the table, which hands out notification
ids in commit order so a reader never skips an event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Recording
from eventsourcing.utils import get_topic

from domain.activity import InstanceActivity
from domain.catalog import AGGREGATES
from domain.note import Note
from domain.quota import Quota
from domain.schedule import Schedule
from services.infrastructure.chain import ChainedPostgresApplicationRecorder, ChainedSQLiteApplicationRecorder
from services.infrastructure.database import DatabaseURL

log = logging.getLogger(__name__)

A = TypeVar("A", bound=Aggregate)

APP_NAME = "zlh"
EVENTS_TABLE = "zlh_events"  # eventsourcing names the PostgreSQL table `<app name>_events`


def store_env(url: DatabaseURL, create_table: bool = False, pool_size: int = 5) -> dict[str, str]:
    """The `eventsourcing` environment for a database URL.

    The application recorder is the hash-chaining one (services/chain.py): every stored event gets
    its row in `zlh_event_hashes` in the same transaction.
    """
    env = {"CREATE_TABLE": "y" if create_table else "n", "POSTGRES_ENABLE_DB_FUNCTIONS": "n"}
    if url.dialect == "memory":
        env |= {"PERSISTENCE_MODULE": "eventsourcing.popo"}  # the fast tests' profile: no chain, no files
    elif url.dialect == "sqlite":
        env |= {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": url.path,
                "SQLITE_LOCK_TIMEOUT": "30",
                "APPLICATION_RECORDER_TOPIC": get_topic(ChainedSQLiteApplicationRecorder)}
    else:
        env |= {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "APPLICATION_RECORDER_TOPIC": get_topic(ChainedPostgresApplicationRecorder),
            "POSTGRES_DBNAME": url.dbname,
            "POSTGRES_HOST": url.host,
            "POSTGRES_PORT": str(url.port),
            "POSTGRES_USER": url.user,
            "POSTGRES_PASSWORD": url.password,
            "POSTGRES_POOL_SIZE": str(pool_size),
            "POSTGRES_MAX_OVERFLOW": str(pool_size * 2),
            "POSTGRES_LOCK_TIMEOUT": "5",
            # No ping before every checkout (a round trip per query, a third of an API thread's time under load):
            # a connection that broke meanwhile fails its query, the pool drops it, and the library retries.
            "POSTGRES_PRE_PING": "n",
        }
    return env


class LogSignal:
    """Wakes local followers when this process appends events (and, on PostgreSQL, any process)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Block until a notification arrives, `stop` is set (checked first) or `timeout` passes; True if woken."""
        with self._cond:
            seen = self._generation
            return self._cond.wait_for(
                lambda: self._generation != seen or (stop is not None and stop.is_set()), timeout=timeout)


class ZLH(Application[UUID]):
    """The control plane's event store. Knows every aggregate, so it can decode every topic."""

    aggregates = AGGREGATES
    #: Every notepad save carries the whole note: snapshot so loading one never replays them all. A schedule's
    #: stream grows by one event per due time, an instance's activity by one per console command or file write,
    #: a customer's instance quota grows by one event per create: snapshot so a create never replays them all.
    snapshotting_intervals = {Note: 20, Schedule: 50, InstanceActivity: 50, Quota: 50}

    name = APP_NAME
    log_section_size = 1000

    def __init__(self, env: dict[str, str], signal: LogSignal | None = None) -> None:
        # Our env wins over os.environ: isolate from stray PERSISTENCE_MODULE etc.
        super().__init__(env=env)
        self.signal = signal or LogSignal()
        #: Called with the recordings of every successful save (metrics count appended events here).
        self.on_saved: list[Callable[[list[Recording]], None]] = []

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording]:  # type: ignore[override]
        recordings = super().save(*objs, **kwargs)
        self.signal.notify()
        for hook in self.on_saved:
            hook(recordings)
        return recordings

    def find(self, aggregate_id: UUID, kind: type[A]) -> A | None:
        """The aggregate with this id if it exists and is a `kind`; else None.

        The one way to load-or-none: an id of another kind (an operation's id where an instance's is
        expected, say) reads as missing, so callers answer 404 and reveal nothing about other ids.
        """
        try:
            aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return aggregate if isinstance(aggregate, kind) else None

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0

    def stream(self, originator_id: UUID) -> Sequence[Any]:
        """Every event of one stream, oldest first, decoded."""
        return [self.mapper.to_domain_event(s) for s in self.recorder.select_events(originator_id)]


class PostgresListener(threading.Thread):
    """LISTENs on the events table's channel (the library NOTIFYs on every insert) and relays."""

    def __init__(self, url: DatabaseURL, signal: LogSignal, stop: threading.Event) -> None:
        super().__init__(name="zlh-pg-listen", daemon=True)
        self.url, self.signal, self.stop_event = url, signal, stop

    def run(self) -> None:
        import psycopg

        while not self.stop_event.is_set():
            try:
                with psycopg.connect(self.url.conninfo(), autocommit=True) as conn:
                    conn.execute(f"LISTEN {EVENTS_TABLE}")
                    while not self.stop_event.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.signal.notify()
            except Exception:
                log.warning("LISTEN connection lost; reconnecting", exc_info=True)
                self.stop_event.wait(1.0)
