"""Group commit: the saves that arrive while one is committing share the next transaction.

On PostgreSQL every save takes the events table's lock (so notification ids follow commit order and
no follower skips an event) and waits for its commit to reach the disk: concurrent saves queue on that
lock, one transaction each. `GroupCommit` sits in front of the recorder's `insert_events`: the first
save commits alone at once; saves arriving meanwhile wait, and the next of them commits all the
waiting ones in one transaction (one lock, one fsync, one NOTIFY), up to `max_batch` saves.

Nothing is weakened: each save's events keep their order and get consecutive notification ids; the
hash-chain trigger links the whole batch in the same transaction; a save that conflicts (optimistic
concurrency, a deterministic id taken) makes the shared insert fail, and then every save of that batch
is inserted again alone, so the conflicting one gets its own `IntegrityError` and the others commit
as they would have. Any other failure of a shared insert is handled the same way: each save then
meets its own outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eventsourcing.persistence import StoredEvent

Insert = Callable[[Sequence[StoredEvent]], Sequence[int] | None]

#: Saves committed together at most (each a few events: a create is three aggregates' events).
MAX_BATCH = 64


@dataclass
class _Pending:
    events: Sequence[StoredEvent]
    done: bool = False
    ids: Sequence[int] | None = None
    error: BaseException | None = None


class GroupCommit:
    """Coalesces concurrent `insert(events)` calls into shared transactions (see the module docstring)."""

    def __init__(self, insert: Insert, max_batch: int = MAX_BATCH) -> None:
        self._insert = insert
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._busy = False
        #: Transactions and saves committed (for the benchmarks and the tests).
        self.transactions = 0
        self.saves = 0

    def insert(self, events: Sequence[StoredEvent]) -> Sequence[int] | None:
        me = _Pending(events)
        with self._cond:
            self._queue.append(me)
            while True:
                while self._busy and not me.done:
                    self._cond.wait()
                if me.done:
                    break
                self._busy = True  # this thread commits the next batch (its own save among them, or a later one)
                batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                self._cond.release()
                try:
                    self._commit(batch)
                except BaseException as exc:  # never leave a waiter of this batch waiting
                    for p in batch:
                        if not p.done:
                            p.error, p.done = exc, True
                    raise
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
        if me.error is not None:
            raise me.error
        return me.ids

    def _commit(self, batch: list[_Pending]) -> None:
        if len(batch) > 1:
            try:
                ids = self._insert([e for p in batch for e in p.events])
            except Exception:
                pass  # a conflict (or anything else) in the shared insert: each save meets its own outcome below
            else:
                self._count(len(batch))
                offset = 0
                for p in batch:
                    p.ids = None if ids is None else list(ids[offset:offset + len(p.events)])
                    offset += len(p.events)
                    p.done = True
                return
        for p in batch:
            try:
                p.ids = self._insert(p.events)
                self._count(1)
            except BaseException as exc:
                p.error = exc
            p.done = True

    def _count(self, saves: int) -> None:
        self.transactions += 1
        self.saves += saves
