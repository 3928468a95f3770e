"""When each API token was last used: telemetry beside the read models, never an event.

A request that authenticates only notes the token in memory (`touch`, no I/O); a background
thread writes what was noted, and each process writes a given token at most once a `every`
(a minute by default). The table is not a projection: rebuilding read models leaves it alone,
and nothing else depends on it. Several processes may write the same token: the newest time wins.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from uuid import UUID

from projections.base import iso
from services.infrastructure.database import PortableCursor, ReadModelDB

log = logging.getLogger(__name__)

TABLE = "zlh_token_usage"


def create_usage_table(cur: PortableCursor) -> None:
    cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (token_id TEXT PRIMARY KEY, last_used_at TEXT NOT NULL)")


def last_used(db: ReadModelDB, token_ids: Iterable[str]) -> dict[str, str]:
    """`token id -> last_used_at` for the tokens that were ever used."""
    ids = list(token_ids)
    if not ids:
        return {}
    marks = ", ".join(["%s"] * len(ids))
    rows = db.query(f"SELECT token_id, last_used_at FROM {TABLE} WHERE token_id IN ({marks})", ids)
    return {r["token_id"]: r["last_used_at"] for r in rows}


class UsageRecorder:
    """Notes uses in memory and writes them off the request path, at most once per `every` per token."""

    def __init__(self, db: ReadModelDB, every: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.db = db
        self.every = every
        self.clock, self.wall = clock, wall
        self._lock = threading.Lock()
        self._noted: dict[UUID, float] = {}  # token -> when this process last noted it
        self._pending: dict[UUID, str] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def touch(self, token_id: UUID) -> None:
        """A request used `token_id` (cheap: no I/O, and nothing at all within `every` of the last note)."""
        now = self.clock()
        last = self._noted.get(token_id)
        if last is not None and now - last < self.every:
            return
        with self._lock:
            self._noted[token_id] = now
            self._pending[token_id] = iso(self.wall())
            if len(self._noted) > 100_000:
                self._noted = {t: at for t, at in self._noted.items() if now - at < self.every}
        self._wake.set()

    def flush(self) -> int:
        """Write what was noted; return how many tokens."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        try:
            with self.db.transaction() as cur:
                for token_id, at in pending.items():
                    cur.execute(
                        f"INSERT INTO {TABLE} (token_id, last_used_at) VALUES (%s, %s) ON CONFLICT (token_id) "
                        f"DO UPDATE SET last_used_at = excluded.last_used_at "
                        f"WHERE {TABLE}.last_used_at < excluded.last_used_at", (str(token_id), at))
        except Exception:
            log.warning("could not record when %d tokens were last used; trying again", len(pending), exc_info=True)
            with self._lock:
                self._pending = {**pending, **self._pending}
            return 0
        return len(pending)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="zlh-token-usage", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=5.0)
            self._wake.clear()
            if self.flush() == 0 and self._pending:
                self._stop.wait(1.0)  # the database did not answer: not in a tight loop

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
