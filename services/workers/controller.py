"""The controller: a singleton reconciler that records drift and the repairs it calls for.

Each pass (every `ZLH_CONTROLLER_INTERVAL`) it
1. holds or takes the leader lease (Redis; `services.infrastructure.leader`) and, on a new term,
   appends `TermBegan` with the next epoch;
2. reads the whole desired state (instances, running operations and billing state from
   the read models) and the whole observed state (driver);
3. plans with the pure `domain.reconcile.plan`;
4. records, per target, only what changed: the finding set (`Drift`), new repairs
   (`Repair.Proposed`, then `Queued` in live mode for Level 1, `Skipped` when a guard
   blocks, `Escalated` past the hourly limit), and `Skipped("resolved")` for open
   repairs whose drift went away. Each target's writes are one atomic save together
   with `ControllerLeadership.Acted`, so a leader whose term has ended cannot write.

Errors observing or writing one target are temporary: that target is retried on a
later pass with capped exponential backoff; the others go on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.instance import Instance
from domain.reconcile import (
    LEVELS,
    UNKNOWN_HOST,
    DesiredInstance,
    Observed,
    PendingOperation,
    Plan,
    Proposal,
    executable,
    plan,
)
from domain.repair import (
    MAX_EXECUTED_PER_HOUR,
    ControllerLeadership,
    Drift,
    FencedOffError,
    Repair,
    RepairStatus,
)
from projections import billing as billing_view
from projections import repairs as repairs_view
from projections.base import parse_iso
from services.edge import Edge
from services.infrastructure.database import ReadModelDB
from services.infrastructure.heartbeats import last_beats
from services.infrastructure.leader import LeaderLock, LockUnavailableError
from services.infrastructure.store import ZLH
from services.ports import DriverError, InstanceDriver, InstanceSpec

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(minutes=10)


class LeadershipLostError(Exception):
    """The lease could not be renewed, or a newer term has begun: stop acting at once."""


@dataclass
class ControllerStatus:
    """What the controller says about itself in `/readyz`, the metrics and its log."""

    state: str = "starting"  # leader | follower | lock_unavailable | starting | stopped
    epoch: int | None = None
    last_pass_at: datetime | None = None
    last_error: str | None = None
    findings: int = 0
    passes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "epoch": self.epoch, "findings": self.findings, "passes": self.passes,
                "last_pass_at": self.last_pass_at.isoformat() if self.last_pass_at else None,
                "last_error": self.last_error}


@dataclass
class Controller:
    app: ZLH
    db: ReadModelDB
    driver: InstanceDriver
    edge: Edge
    lock: LeaderLock
    mode: str = "dry-run"
    interval: float = 30.0
    stale_after: float = 900.0
    zone: str = "play.zlh.localhost"
    holder: str = "controller"
    level2: bool = False
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    #: Called right before each atomic save (after the lease check): tests pause here.
    before_write: Callable[[], None] = field(default=lambda: None)
    status: ControllerStatus = field(default_factory=ControllerStatus)
    stop_event: threading.Event = field(default_factory=threading.Event)
    _leadership: ControllerLeadership | None = None
    _backoff: dict[str, tuple[int, datetime]] = field(default_factory=dict)

    # The loop.

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.tick()
            except Exception as exc:
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("controller pass failed")
            self.stop_event.wait(self.interval)
        self.status.state = "stopped"
        if self._leadership is not None:
            self.lock.release()

    def stop(self) -> None:
        self.stop_event.set()

    def tick(self) -> Plan | None:
        """One pass; returns the plan it recorded, or None when it is not the leader."""
        try:
            held = self.lock.acquire()
        except LockUnavailableError as exc:
            if self.status.state != "lock_unavailable":
                log.error("controller idle: the leader lock is unreachable (%s); no pass runs until it is back", exc)
            self._step_down("lock_unavailable", str(exc))
            return None
        if not held:
            self._step_down("follower", None)
            return None
        try:
            if self._leadership is None:
                self._begin_term()
            result = self.run_pass()
        except LeadershipLostError as exc:
            log.warning("controller stops acting: %s", exc)
            self._step_down("follower", str(exc))
            return None
        self.status.state, self.status.last_error = "leader", None
        return result

    def _step_down(self, state: str, error: str | None) -> None:
        self._leadership = None
        self.status.state, self.status.epoch, self.status.last_error = state, None, error

    def _begin_term(self) -> None:
        leadership = self.app.find(ControllerLeadership.create_id(), ControllerLeadership) or ControllerLeadership()
        epoch = leadership.begin_term(self.holder)
        try:
            self.app.save(leadership)
        except IntegrityError as exc:
            raise LeadershipLostError("another controller began a term at the same time") from exc
        self._leadership = leadership
        self.status.epoch = epoch
        log.info("controller leads with epoch %d (mode %s)", epoch, self.mode)

    @property
    def epoch(self) -> int:
        assert self._leadership is not None
        return self._leadership.epoch

    # A pass.

    def run_pass(self) -> Plan:
        now = self.now()
        instances = self.desired_instances()
        operations = self.running_operations(now)
        observed = self.observe()
        result = plan(instances, operations, observed, now=now, stale_after=timedelta(seconds=self.stale_after),
                      zone=self.zone)
        by_target = result.findings_by_target()
        proposals: dict[str, list[Proposal]] = {}
        for p in result.proposals:
            proposals.setdefault(p.target, []).append(p)
        targets = set(by_target) | set(repairs_view.drifting_targets(self.db))
        for target in sorted(targets):
            if self._backing_off(target, now):
                continue
            try:
                self.record_target(target, [f.as_dict() for f in by_target.get(target, [])],
                                   proposals.get(target, []), now)
                self._backoff.pop(target, None)
            except (LeadershipLostError, FencedOffError) as exc:
                raise LeadershipLostError(str(exc)) from exc
            except Exception as exc:
                self._back_off(target, now, exc)
        self.status.last_pass_at, self.status.findings = now, len(result.findings)
        self.status.passes += 1
        return result

    def _host(self, spec: InstanceSpec) -> str:
        """Where the driver says players reach the instance; `UNKNOWN_HOST` when it cannot say (no container)."""
        try:
            return self.driver.public_host(spec)
        except DriverError as exc:
            log.info("controller: no host for instance %s (%s)", spec.instance_id, exc.code)
            return UNKNOWN_HOST

    def desired_instances(self) -> list[DesiredInstance]:
        rows = self.db.query("SELECT id, owner_id, kind, template, status, edge_name, port, pending_operation_id "
                             "FROM rm_instances WHERE status <> 'deleted'")
        suspended = set(billing_view.suspended_users(self.db))  # one query; the worker re-checks the log
        return [DesiredInstance(
            id=UUID(r["id"]), owner_id=UUID(r["owner_id"]), kind=r["kind"], status=r["status"],
            edge_name=r["edge_name"], port=int(r["port"]) if r["port"] is not None else None,
            pending_operation_id=UUID(r["pending_operation_id"]) if r["pending_operation_id"] else None,
            billing_suspended=r["owner_id"] in suspended,
            host=self._host(InstanceSpec(UUID(r["id"]), r["kind"], r["template"], r["edge_name"])),
        ) for r in rows]

    def running_operations(self, now: datetime) -> list[PendingOperation]:
        beats = last_beats(self.db)
        rows = self.db.query("SELECT id, instance_id, kind, step, updated_at FROM rm_operations "
                             "WHERE phase = 'running'")
        out = []
        for r in rows:
            op_id = UUID(r["id"])
            last = max(parse_iso(r["updated_at"]), beats.get(op_id, datetime.min.replace(tzinfo=UTC)))
            out.append(PendingOperation(op_id, UUID(r["instance_id"]), r["kind"], last, r["step"]))
        return out

    def observe(self) -> Observed:
        hosts = self.driver.observe()
        edge = self.edge.observe()
        return Observed(dns=edge.srv_ports, proxy=edge.proxy, dns_owners=edge.srv_owners,
                        proxy_owners=edge.proxy_owners,
                        processes=frozenset(UUID(i) for i in hosts["processes"]),
                        directories=frozenset(UUID(i) for i in hosts["directories"]),
                        containers={int(c["vmid"]): UUID(c["instance_id"]) if c["instance_id"] else None
                                    for c in hosts.get("containers", [])})

    # Recording one target.

    def record_target(self, target: str, findings: list[dict[str, str]], proposals: list[Proposal],
                      now: datetime) -> None:
        drift = self.app.find(Drift.create_id(target), Drift)
        if drift is None:
            if not findings:
                return
            drift = Drift(target)
        drift.record_findings(findings, self.epoch)
        repairs: list[Repair] = []
        wanted = {p.kind for p in proposals}
        for kind, repair_id in drift.last_repair.items():
            if kind in wanted:
                continue
            repair: Repair = self.app.repository.get(repair_id)
            if repair.status in (RepairStatus.PROPOSED, RepairStatus.QUEUED):
                repair.skip("resolved", self.epoch)
                repairs.append(repair)
        for proposal in proposals:
            repairs.extend(self._open(drift, proposal, now))
        aggregates = ([drift] if drift.pending_events else []) + repairs
        if aggregates:
            self._save(*aggregates)

    def _open(self, drift: Drift, proposal: Proposal, now: datetime) -> list[Repair]:
        """A new repair for `proposal`, unless the last one of its kind still stands for it."""
        last_id = drift.last_repair.get(proposal.kind)
        abandoned: Repair | None = None
        if last_id is not None:
            last: Repair = self.app.repository.get(last_id)
            same_episode = drift.opened_in.get(proposal.kind) == drift.episode
            if last.status is RepairStatus.RUNNING and self._abandoned(last, now):
                last.fail("interrupted", "the repair worker stopped reporting; the drift is planned again",
                          permanent=False)
                abandoned = last
            elif last.is_open:
                return []
            elif same_episode and last.status is RepairStatus.SKIPPED and last.reason == proposal.blocked_by:
                return []  # still blocked for the same reason: recorded once per episode
            elif last.status is RepairStatus.FAILED and (last.error or {}).get("permanent"):
                if same_episode:
                    return []  # recorded; retried only when the drift changes
            elif last.status is RepairStatus.FAILED and self._backing_off_repair(drift, last, now):
                return []  # temporary failure: retried on a later pass, with capped exponential backoff
            elif last.status is RepairStatus.ESCALATED and \
                    drift.executed_within(proposal.kind, now) >= MAX_EXECUTED_PER_HOUR:
                return []  # escalated once; a human has it
        live = self.mode == "live" and executable(proposal.kind, self.level2) and proposal.blocked_by is None
        over_limit = live and drift.executed_within(proposal.kind, now) >= MAX_EXECUTED_PER_HOUR
        queue = live and not over_limit
        rid = drift.open_repair(proposal.kind, queued=queue, at=now, epoch=self.epoch)
        repair = Repair(
            sequence=drift.sequences[proposal.kind], kind=proposal.kind, level=LEVELS[proposal.kind],
            target=proposal.target,
            instance_id=proposal.instance_id, mode=self.mode, epoch=self.epoch,
            findings=list(drift.findings), params=proposal.params,
            expected_versions=self._expected_versions(proposal),
        )
        assert repair.id == rid
        if proposal.blocked_by:
            repair.skip(proposal.blocked_by, self.epoch)
        elif over_limit:
            repair.escalate(f"more than {MAX_EXECUTED_PER_HOUR} {proposal.kind} repairs within the hour",
                            self.epoch)
        elif queue:
            repair.queue(self.epoch)
        return [repair] if abandoned is None else [abandoned, repair]

    def _backing_off_repair(self, drift: Drift, failed: Repair, now: datetime) -> bool:
        row = repairs_view.get(self.db, str(failed.id))
        if row is None:
            return True  # the read model has not seen the failure yet: next pass
        tries = max(drift.executed_within(failed.kind, now), 1)
        delay = min(timedelta(seconds=self.interval * 2 ** tries), MAX_BACKOFF)
        return now - parse_iso(row["updated_at"]) < delay

    def _abandoned(self, repair: Repair, now: datetime) -> bool:
        """A repair `running` with no word from its worker for `stale_after` (the worker died mid-repair)."""
        row = repairs_view.get(self.db, str(repair.id))
        return row is not None and now - parse_iso(row["updated_at"]) >= timedelta(seconds=self.stale_after)

    def _expected_versions(self, proposal: Proposal) -> dict[str, int]:
        versions: dict[str, int] = {}
        if proposal.instance_id is not None:
            instance: Instance = self.app.repository.get(proposal.instance_id)
            versions[str(instance.id)] = instance.version
        operation_id = proposal.params.get("operation_id")
        if operation_id:
            versions[operation_id] = self.app.repository.get(UUID(operation_id)).version
        return versions

    def _save(self, *aggregates: Any) -> None:
        """One atomic save with `Acted` at the version this term last saw: fenced by the store."""
        if not self.lock.renew():
            raise LeadershipLostError("the leader lease could not be renewed")
        self.before_write()
        assert self._leadership is not None
        epoch = self._leadership.epoch
        self._leadership.act(epoch, len(aggregates))
        try:
            self.app.save(self._leadership, *aggregates)
        except BaseException:
            self._leadership = self.app.repository.get(ControllerLeadership.create_id())
            if self._leadership.epoch != epoch:
                raise LeadershipLostError(f"epoch {epoch} fenced off by epoch {self._leadership.epoch}") from None
            raise

    # Backoff per target.

    def _backing_off(self, target: str, now: datetime) -> bool:
        entry = self._backoff.get(target)
        return entry is not None and now < entry[1]

    def _back_off(self, target: str, now: datetime, exc: Exception) -> None:
        failures = self._backoff.get(target, (0, now))[0] + 1
        delay = min(timedelta(seconds=self.interval * 2 ** (failures - 1)), MAX_BACKOFF)
        self._backoff[target] = (failures, now + delay)
        kind = "driver" if isinstance(exc, DriverError) else type(exc).__name__
        log.warning("controller: %s on %s (%s); retrying in %.0fs", kind, target, exc, delay.total_seconds())
