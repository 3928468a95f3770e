"""Group commit: concurrent saves share transactions; a conflicting one is answered alone, the others commit."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from eventsourcing.persistence import IntegrityError, StoredEvent

from services.infrastructure.group_commit import GroupCommit


class FakeLog:
    """A log with the store's rule: (originator_id, version) is unique; a failing insert stores nothing."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.rows: list[tuple[str, int]] = []
        self.transactions: list[int] = []
        self.gate = gate
        self.lock = threading.Lock()

    def insert(self, events: Sequence[StoredEvent]) -> list[int]:
        if self.gate is not None:
            self.gate.wait(5)
        with self.lock:
            keys = [(str(e.originator_id), e.originator_version) for e in events]
            if len(set(keys)) < len(keys) or set(keys) & set(self.rows):
                raise IntegrityError("duplicate key")
            start = len(self.rows)
            self.rows.extend(keys)
            self.transactions.append(len(events))
            return list(range(start + 1, start + 1 + len(events)))


def event(stream: str, version: int) -> StoredEvent:
    return StoredEvent(originator_id=stream, originator_version=version, topic="t", state=b"{}")


def test_a_save_alone_commits_at_once() -> None:
    log = FakeLog()
    group = GroupCommit(log.insert)
    assert group.insert([event("a", 1), event("a", 2)]) == [1, 2]
    assert log.transactions == [2]


def test_saves_arriving_meanwhile_share_a_transaction_and_a_conflict_is_split_out() -> None:
    gate = threading.Event()
    log = FakeLog(gate)
    group = GroupCommit(log.insert)
    results: dict[str, object] = {}

    def save(name: str, events: list[StoredEvent]) -> None:
        try:
            results[name] = group.insert(events)
        except IntegrityError as exc:
            results[name] = exc

    first = threading.Thread(target=save, args=("first", [event("x", 1)]))
    first.start()
    # The first insert holds the gate; these queue behind it and go together next.
    others = [threading.Thread(target=save, args=(f"s{i}", [event(f"s{i}", 1), event(f"s{i}", 2)])) for i in range(5)]
    others.append(threading.Thread(target=save, args=("dup", [event("s0", 1)])))  # conflicts with s0
    for t in others:
        t.start()
    deadline = threading.Event()
    while len(group._queue) < len(others) and not deadline.wait(0.01):
        pass
    gate.set()
    for t in [first, *others]:
        t.join(10)
    failed = [name for name, r in results.items() if isinstance(r, IntegrityError)]
    assert failed in (["dup"], ["s0"])  # exactly one of the two conflicting saves lost; every other one committed
    ids = [i for r in results.values() if not isinstance(r, Exception) for i in r]  # type: ignore[union-attr]
    assert sorted(ids) == list(range(1, len(ids) + 1))  # every committed event got its own id, none lost
    assert len(log.rows) == len(set(log.rows)) == len(ids)
    for name, r in results.items():
        if name.startswith("s") and not isinstance(r, Exception):
            assert [log.rows[i - 1] for i in r] == [(name, 1), (name, 2)]  # a save's events in order, together


def test_saves_are_batched_under_contention() -> None:
    log = FakeLog()
    group = GroupCommit(log.insert)
    threads = [threading.Thread(target=lambda i=i: [group.insert([event(f"t{i}-{n}", 1)]) for n in range(50)])
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert group.saves == 400 and len(log.rows) == 400
    assert group.transactions <= 400
