"""Repairs, drift records and controller leadership, as aggregates.

- `ControllerLeadership` (one stream): each leadership term appends `TermBegan` with an
  epoch one higher than the last. Every batch of controller writes also appends
  `Acted` to this stream at the version the controller last saw, in the same atomic
  save: once a newer term has begun, an older leader's write collides on the version
  and the store rejects the whole batch (fencing by optimistic concurrency).
- `Drift` (one stream per target): the current set of findings, recorded only when it
  changes, and the repairs opened for it (one open repair per kind at a time).
- `Repair`: `proposed -> queued -> running -> succeeded | failed`, or `skipped` /
  `escalated`. Every event the controller writes carries its epoch.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError, IllegalTransitionError
from domain.ids import derive

#: Executed repairs per (target, kind) per hour before the next one is escalated instead.
MAX_EXECUTED_PER_HOUR = 3


class FencedOffError(DomainError):
    """A write from a leadership term older than the latest one."""

    code = "fenced_off"


class RepairStatus(StrEnum):
    PROPOSED = "proposed"
    SKIPPED = "skipped"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ESCALATED = "escalated"


OPEN = frozenset({RepairStatus.PROPOSED, RepairStatus.QUEUED, RepairStatus.RUNNING})

LEADERSHIP_ID = derive("controller-leadership")


def drift_id(target: str) -> UUID:
    return derive("drift", target)


def repair_id(target: str, kind: str, sequence: int) -> UUID:
    """The `sequence`th repair of `kind` on `target`: two controllers proposing it collide in the store."""
    return derive("repair", target, kind, sequence)


class ControllerLeadership(Aggregate):
    TOPIC = "zlh.ControllerLeadership"

    class Event(Aggregate.Event):
        TOPIC = "zlh.ControllerLeadership.Event"

    class Established(Event, Aggregate.Created):
        TOPIC = "zlh.ControllerLeadership.Established"

    class TermBegan(Event):
        TOPIC = "zlh.ControllerLeadership.TermBegan"
        epoch: int
        holder: str

    class Acted(Event):
        """A batch of controller writes under `epoch` (the fencing token's check)."""

        TOPIC = "zlh.ControllerLeadership.Acted"
        epoch: int
        writes: int

    @staticmethod
    def create_id() -> UUID:
        return LEADERSHIP_ID

    @event(Established)
    def __init__(self) -> None:
        self.epoch = 0
        self.holder: str | None = None

    def begin_term(self, holder: str) -> int:
        self._term_began(epoch=self.epoch + 1, holder=holder)
        return self.epoch

    def act(self, epoch: int, writes: int) -> None:
        if epoch != self.epoch:
            raise FencedOffError(f"epoch {epoch} is not the current term {self.epoch}")
        self._acted(epoch=epoch, writes=writes)

    @event(TermBegan)
    def _term_began(self, epoch: int, holder: str) -> None:
        self.epoch = epoch
        self.holder = holder

    @event(Acted)
    def _acted(self, epoch: int, writes: int) -> None:
        pass


class Drift(Aggregate):
    """What the controller found on one target, and the repairs it opened for it."""

    TOPIC = "zlh.Drift"

    class Event(Aggregate.Event):
        TOPIC = "zlh.Drift.Event"

    class Opened(Event, Aggregate.Created):
        TOPIC = "zlh.Drift.Opened"
        target: str

    class FindingsChanged(Event):
        TOPIC = "zlh.Drift.FindingsChanged"
        target: str
        findings: list[dict[str, str]]
        epoch: int

    class RepairOpened(Event):
        TOPIC = "zlh.Drift.RepairOpened"
        repair_id: UUID
        kind: str
        sequence: int
        queued: bool
        at: datetime
        epoch: int

    @staticmethod
    def create_id(target: str) -> UUID:
        return drift_id(target)

    @event(Opened)
    def __init__(self, target: str) -> None:
        self.target = target
        self.findings: list[dict[str, str]] = []
        #: Bumped whenever the finding set changes: a new episode of drift on this target.
        self.episode = 0
        self.opened_in: dict[str, int] = {}
        self.sequences: dict[str, int] = {}
        self.last_repair: dict[str, UUID] = {}
        self.queued_at: dict[str, list[datetime]] = {}

    def record_findings(self, findings: list[dict[str, str]], epoch: int) -> bool:
        """Record the finding set if it differs from the last one; return whether it did."""
        normalized = sorted(findings, key=lambda f: (f["kind"], f["detail"]))
        if [f["kind"] for f in normalized] == [f["kind"] for f in self.findings]:
            return False
        self._findings_changed(target=self.target, findings=normalized, epoch=epoch)
        return True

    def next_repair_id(self, kind: str) -> tuple[UUID, int]:
        sequence = self.sequences.get(kind, 0) + 1
        return repair_id(self.target, kind, sequence), sequence

    def open_repair(self, kind: str, queued: bool, at: datetime, epoch: int) -> UUID:
        rid, sequence = self.next_repair_id(kind)
        self._repair_opened(repair_id=rid, kind=kind, sequence=sequence, queued=queued, at=at, epoch=epoch)
        return rid

    def executed_within(self, kind: str, now: datetime, window: timedelta = timedelta(hours=1)) -> int:
        """How many repairs of `kind` were queued for execution within `window` before `now`."""
        return sum(1 for at in self.queued_at.get(kind, []) if now - at < window)

    @event(FindingsChanged)
    def _findings_changed(self, target: str, findings: list[dict[str, str]], epoch: int) -> None:
        self.findings = list(findings)
        self.episode += 1

    @event(RepairOpened)
    def _repair_opened(self, repair_id: UUID, kind: str, sequence: int, queued: bool, at: datetime,
                       epoch: int) -> None:
        self.sequences[kind] = sequence
        self.last_repair[kind] = repair_id
        self.opened_in[kind] = self.episode
        if queued:
            self.queued_at.setdefault(kind, []).append(at)


class Repair(Aggregate):
    TOPIC = "zlh.Repair"

    class Event(Aggregate.Event):
        TOPIC = "zlh.Repair.Event"

    class Proposed(Event, Aggregate.Created):
        """`expected_versions` are the stream versions the plan saw: the worker re-checks them."""

        TOPIC = "zlh.Repair.Proposed"
        sequence: int
        kind: str
        level: int
        target: str
        instance_id: UUID | None
        mode: str
        epoch: int
        findings: list[dict[str, str]]
        params: dict[str, Any]
        expected_versions: dict[str, int]

    class Queued(Event):
        TOPIC = "zlh.Repair.Queued"
        epoch: int

    class Skipped(Event):
        TOPIC = "zlh.Repair.Skipped"
        reason: str
        epoch: int

    class Started(Event):
        TOPIC = "zlh.Repair.Started"
        worker_id: str
        epoch: int

    class Succeeded(Event):
        TOPIC = "zlh.Repair.Succeeded"
        kind: str
        target: str
        result: dict[str, Any]
        epoch: int

    class Failed(Event):
        TOPIC = "zlh.Repair.Failed"
        kind: str
        target: str
        code: str
        message: str
        permanent: bool
        epoch: int

    class Escalated(Event):
        TOPIC = "zlh.Repair.Escalated"
        kind: str
        target: str
        reason: str
        epoch: int

    @staticmethod
    def create_id(target: str, kind: str, sequence: int) -> UUID:
        return repair_id(target, kind, sequence)

    @event(Proposed)
    def __init__(self, sequence: int, kind: str, level: int, target: str, instance_id: UUID | None, mode: str,
                 epoch: int, findings: list[dict[str, str]], params: dict[str, Any],
                 expected_versions: dict[str, int]) -> None:
        self.sequence = sequence
        self.kind = kind
        self.level = level
        self.target = target
        self.instance_id = instance_id
        self.mode = mode
        self.epoch = epoch
        self.findings = findings
        self.params = params
        self.expected_versions = expected_versions
        self.status = RepairStatus.PROPOSED
        self.reason: str | None = None
        self.error: dict[str, Any] | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    def queue(self, epoch: int) -> None:
        self._require(RepairStatus.PROPOSED)
        self._queued(epoch=epoch)

    def skip(self, reason: str, epoch: int) -> None:
        if self.status not in (RepairStatus.PROPOSED, RepairStatus.QUEUED):
            raise IllegalTransitionError(f"a {self.status} repair cannot be skipped")
        self._skipped(reason=reason, epoch=epoch)

    def start(self, worker_id: str) -> None:
        self._require(RepairStatus.QUEUED)
        self._started(worker_id=worker_id, epoch=self.epoch)

    def succeed(self, result: dict[str, Any]) -> None:
        self._require(RepairStatus.RUNNING)
        self._succeeded(kind=self.kind, target=self.target, result=result, epoch=self.epoch)

    def fail(self, code: str, message: str, permanent: bool) -> None:
        self._require(RepairStatus.RUNNING)
        self._failed(kind=self.kind, target=self.target, code=code, message=message, permanent=permanent,
                     epoch=self.epoch)

    def escalate(self, reason: str, epoch: int) -> None:
        self._require(RepairStatus.PROPOSED)
        self._escalated(kind=self.kind, target=self.target, reason=reason, epoch=epoch)

    def _require(self, status: RepairStatus) -> None:
        if self.status is not status:
            raise IllegalTransitionError(f"repair is {self.status}, not {status}")

    @event(Queued)
    def _queued(self, epoch: int) -> None:
        self.status = RepairStatus.QUEUED

    @event(Skipped)
    def _skipped(self, reason: str, epoch: int) -> None:
        self.status = RepairStatus.SKIPPED
        self.reason = reason

    @event(Started)
    def _started(self, worker_id: str, epoch: int) -> None:
        self.status = RepairStatus.RUNNING

    @event(Succeeded)
    def _succeeded(self, kind: str, target: str, result: dict[str, Any], epoch: int) -> None:
        self.status = RepairStatus.SUCCEEDED

    @event(Failed)
    def _failed(self, kind: str, target: str, code: str, message: str, permanent: bool, epoch: int) -> None:
        self.status = RepairStatus.FAILED
        self.error = {"code": code, "message": message, "permanent": permanent}

    @event(Escalated)
    def _escalated(self, kind: str, target: str, reason: str, epoch: int) -> None:
        self.status = RepairStatus.ESCALATED
        self.reason = reason
