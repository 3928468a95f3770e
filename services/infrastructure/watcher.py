"""Read-your-writes: wait until the read models have applied a log position.

One `PositionWatcher` per process serves every waiting request: a single thread
reads the positions table while anyone waits, and in-process projection runners
poke it after each commit, so N waiting requests cost one query per poll, not N.
"""

from __future__ import annotations

import threading
import time

from services.infrastructure.database import ReadModelDB
from services.infrastructure.log_following import read_positions

POLL_INTERVAL = 0.005  # across processes (API with --no-workers), how often the positions are re-read


class PositionWatcher:
    def __init__(self, db: ReadModelDB, stop: threading.Event) -> None:
        self.db = db
        self._stop = stop
        self._cond = threading.Condition()
        self._positions: dict[str, int] = {}
        self._waiters = 0
        self._poked = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zlh-position-watcher", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """A projection committed: re-read the positions now."""
        self._poked.set()

    def wait(self, position: int, names: tuple[str, ...], timeout: float) -> bool:
        """Block until every named projection is at `position` or beyond; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiters += 1
            self._poked.set()
            try:
                while not all(self._positions.get(n, 0) >= position for n in names):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stop.is_set():
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._waiters -= 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poked.wait(timeout=1.0)
            self._poked.clear()
            if not self._waiters:
                continue
            try:
                positions = read_positions(self.db)
            except Exception:
                positions = None
            with self._cond:
                if positions is not None:
                    self._positions = positions
                self._cond.notify_all()
                still_waiting = self._waiters > 0
            if still_waiting and not self._poked.is_set():
                self._stop.wait(POLL_INTERVAL)  # nobody poked: poll again soon (another process may commit)
                self._poked.set()

    def close(self) -> None:
        self._poked.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5)
