"""Read-your-writes: wait until the read models have applied a log position, woken by notifications.

One `PositionWatcher` per process serves every waiting request, from positions it keeps in memory:

- when the projections follow the log in this process (`zlh serve`, the embedded mode), the
  `ProjectionGroup` hands over every position it committed or saw, after each page (`advanced`): a
  waiting request is woken by the commit itself, with no query and no polling;
- in an API process without them (`zlh serve --no-workers`), the group of another process
  `NOTIFY`s `zlh_positions` in the transaction that moves positions (PostgreSQL); a listening
  thread here re-reads the positions table once per notification. On SQLite, which has no
  notifications, the table is re-read every `POLL_INTERVAL` while anyone waits.

Besides, the positions are re-read when a wait starts and the cache knows nothing yet, after a
rebuild's swap (`poke`), and every `SAFETY_INTERVAL` while anyone waits, in case a notification was
lost (a dropped LISTEN connection).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from services.infrastructure.database import DatabaseURL, ReadModelDB
from services.infrastructure.log_following import POSITIONS_CHANNEL, read_positions

log = logging.getLogger(__name__)

CHANNEL = POSITIONS_CHANNEL
POLL_INTERVAL = 0.005  # SQLite across processes only: how often the positions are re-read while anyone waits
SAFETY_INTERVAL = 1.0  # a re-read while anyone waits, whatever else wakes us


class PositionWatcher:
    def __init__(self, db: ReadModelDB, stop: threading.Event) -> None:
        self.db = db
        self._stop = stop
        self._cond = threading.Condition()
        self._positions: dict[str, int] = {}
        self._known = False  # read from the table at least once
        self._waiters = 0
        self._poked = threading.Event()
        #: Set when this process's own `ProjectionGroup` reports every page (`advanced`).
        self.local_follower = False
        self._listener: threading.Thread | None = None
        self._thread = threading.Thread(target=self._run, name="zlh-position-watcher", daemon=True)
        self._thread.start()

    def follow_locally(self) -> None:
        """This process runs the projection group: its reports (`advanced`) are all a waiter needs."""
        self.local_follower = True

    def advanced(self, positions: Mapping[str, int]) -> None:
        """The in-process group committed (or saw) these positions: wake whoever waits for them."""
        with self._cond:
            for name, position in positions.items():
                if position > self._positions.get(name, 0):
                    self._positions[name] = position
            self._cond.notify_all()

    def poke(self) -> None:
        """Positions moved in a way nobody reported (a rebuild's swap): re-read them now."""
        self._poked.set()

    def wait(self, position: int, names: tuple[str, ...], timeout: float) -> bool:
        """Block until every named projection is at `position` or beyond; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._reached(position, names):
                return True
            self._waiters += 1
            if not self._known or not self.local_follower:
                self._poked.set()
            self._ensure_listener()
            try:
                while not self._reached(position, names):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stop.is_set():
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._waiters -= 1

    def _reached(self, position: int, names: tuple[str, ...]) -> bool:
        return all(self._positions.get(n, 0) >= position for n in names)

    def _ensure_listener(self) -> None:
        if self.local_follower or self._listener is not None or self.db.url.dialect != "postgres":
            return
        self._listener = threading.Thread(target=self._listen, args=(self.db.url,), name="zlh-position-listen",
                                          daemon=True)
        self._listener.start()

    def _listen(self, url: DatabaseURL) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(url.conninfo(), autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._poked.set()  # anything committed before LISTEN took effect
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._poked.set()
            except Exception:
                log.warning("LISTEN %s lost; reconnecting", CHANNEL, exc_info=True)
                self._stop.wait(1.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            polling = self._waiters and not self.local_follower and self.db.url.dialect != "postgres"
            self._poked.wait(timeout=POLL_INTERVAL if polling else SAFETY_INTERVAL)
            self._poked.clear()
            if not self._waiters:
                continue
            try:
                positions = read_positions(self.db)
            except Exception:
                continue
            with self._cond:
                self._known = True
                for name, position in positions.items():
                    if position > self._positions.get(name, 0):
                        self._positions[name] = position
                self._cond.notify_all()

    def close(self) -> None:
        self._poked.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.join(timeout=5)
