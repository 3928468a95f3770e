"""The repair worker: executes the Level 1 repairs the controller queued, after checking again.

It follows the log for `Repair.Queued`. Right before acting it re-checks, in order:
1. the code allow-list (`domain.reconcile.EXECUTABLE`): anything else is skipped as `not_allowed`;
2. the billing guard: nothing makes a billing-suspended instance running or reachable
   (`billing_suspended`);
3. staleness: if a stream the plan read has moved since, the repair is `stale` and the
   controller re-plans on its next pass; a stale operation that reported again is not cleared.

Then it claims the repair by appending `Started` (optimistic concurrency: one worker wins)
and records `Succeeded` or `Failed`. Clearing a stale operation fails it with code
`interrupted` and unlocks the instance in one atomic save with the repair's result;
nothing is retried automatically.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from domain.backup import Backup, backup_id_for_operation
from domain.billing import EnforcementState
from domain.instance import Instance
from domain.operation import Operation
from domain.reconcile import DesiredInstance, executable, guard
from domain.repair import Repair, RepairStatus
from projections import operations as operations_view
from services.billing import recorded_state
from services.edge import Edge
from services.infrastructure.database import ReadModelDB
from services.infrastructure.heartbeats import last_beats
from services.infrastructure.log_following import LogFollower, Wakeup
from services.infrastructure.store import ZLH
from services.ports import DriverError, InstanceDriver, InstanceSpec

log = logging.getLogger(__name__)

POSITION = "repair"
#: Driver errors that another attempt will not fix.
PERMANENT_CODES = frozenset({"edge_file_corrupt", "bad_request", "not_found"})


class RepairWorker:
    def __init__(self, app: ZLH, db: ReadModelDB, driver: InstanceDriver, edge: Edge, *, worker_id: str,
                 stale_after: float, level2: bool = False,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.app, self.db, self.driver, self.edge = app, db, driver, edge
        self.worker_id, self.stale_after, self.level2, self.now = worker_id, stale_after, level2, now
        self.stop_event = threading.Event()
        self.follower = LogFollower(POSITION, app, db, lambda n: self.execute(n.originator_id),
                                    topics={Repair.Queued.TOPIC})

    def position(self) -> int:
        return self.follower.position()

    def run(self, wakeup: Wakeup) -> None:
        self.follower.run(self.stop_event, wakeup)

    def dispatch_page(self) -> int:
        return self.follower.process_page()

    def execute(self, repair_id: UUID) -> str:
        """Check, claim, act, record. Returns the repair's final status."""
        repair: Repair = self.app.repository.get(repair_id)
        if repair.status is not RepairStatus.QUEUED:
            return repair.status.value
        reason = self.recheck(repair)
        if reason is not None:
            repair.skip(reason, repair.epoch)
            return self._finish(repair)
        repair.start(self.worker_id)
        try:
            self.app.save(repair)
        except IntegrityError:
            return "claimed elsewhere"
        try:
            extra = self._act(repair)
        except DriverError as exc:
            repair.fail(exc.code, exc.message, permanent=exc.code in PERMANENT_CODES)
            return self._finish(repair)
        except Exception as exc:
            log.exception("repair %s crashed", repair_id)
            repair.fail("internal", f"{type(exc).__name__}: {exc}", permanent=False)
            return self._finish(repair)
        return self._finish(repair, *extra)

    def _finish(self, repair: Repair, *extra: Any) -> str:
        try:
            self.app.save(repair, *extra)
        except IntegrityError:
            if not extra:
                log.warning("repair %s: someone else changed it first; leaving it", repair.id)
                return "conflict"
            # What the repair would have changed moved under it: record that, change nothing else.
            repair = self.app.repository.get(repair.id)
            if repair.status is not RepairStatus.RUNNING:
                return repair.status.value
            repair.fail("conflict", "the streams changed while the repair ran; nothing was changed", permanent=False)
            return self._finish(repair)
        log.info("repair %s %s: %s on %s", repair.id, repair.status.value, repair.kind, repair.target)
        return repair.status.value

    def recheck(self, repair: Repair) -> str | None:
        """Why the repair must not run now, or None."""
        if not executable(repair.kind, self.level2):
            return "not_allowed"
        instance = self._instance(repair.instance_id)
        if instance is not None:
            reason = guard(repair.kind, self._desired(instance))
            if reason is not None:
                return reason
        for stream_id, version in repair.expected_versions.items():
            if self._version(UUID(stream_id)) != version:
                return "stale"
        if repair.kind == "clear_stale_operation_lock":
            op_id = UUID(repair.params["operation_id"])
            beat = last_beats(self.db).get(op_id)
            if beat is not None and self.now() - beat < timedelta(seconds=self.stale_after):
                return "stale"
        return None

    def _instance(self, instance_id: UUID | None) -> Instance | None:
        return self.app.find(instance_id, Instance) if instance_id is not None else None

    def _desired(self, instance: Instance) -> DesiredInstance:
        suspended = recorded_state(self.app, instance.owner_id) == EnforcementState.SUSPENDED  # from the log
        return DesiredInstance(
            id=instance.id, owner_id=instance.owner_id, kind=instance.kind.value, status=instance.status.value,
            edge_name=instance.edge_name, port=instance.port, pending_operation_id=instance.pending_operation_id,
            billing_suspended=suspended or "billing" in instance.suspension_reasons,
        )

    def _version(self, stream_id: UUID) -> int | None:
        aggregate = self.app.find(stream_id, Aggregate)
        return aggregate.version if aggregate is not None else None

    # The Level 1 repairs.

    def _act(self, repair: Repair) -> list[Any]:
        """Do the repair; record its result on `repair`; return other aggregates to save with it."""
        if repair.kind == "edge_republish":
            instance = self._instance(repair.instance_id)
            assert instance is not None and instance.port is not None
            spec = InstanceSpec(instance.id, instance.kind.value, instance.template, instance.edge_name)
            host = self.driver.public_host(spec)
            record = self.edge.publish_dns(spec, host, instance.port)
            proxy = self.edge.publish_proxy(spec, host, instance.port)
            repair.succeed({"dns": record.get("name") if record else None, "proxy": proxy})
            return []
        if repair.kind == "clear_stale_operation_lock":
            return self._clear_stale(repair)
        raise AssertionError(f"{repair.kind} is not executable")

    def _clear_stale(self, repair: Repair) -> list[Any]:
        operation: Operation = self.app.repository.get(UUID(repair.params["operation_id"]))
        instance: Instance = self.app.repository.get(operation.instance_id)
        step = operation.open_step or (operation.steps[-1]["name"] if operation.steps else None)
        last = self._last_report(operation)
        message = (f"the worker stopped reporting during step {step or 'none'} (last report {last}); "
                   "the operation was not retried: start it again if you still want it")
        operation.fail("interrupted", message)
        instance.fail_operation(operation.id, operation.kind.value, "interrupted",
                                process_stopped=operation.stopped_process)
        extra: list[Any] = [operation, instance]
        if operation.kind.value == "backup":
            backup = self.app.find(backup_id_for_operation(operation.id), Backup)
            if backup is not None and backup.status == "pending":
                backup.fail("interrupted", message)
                extra.append(backup)
        repair.succeed({"operation_id": str(operation.id), "last_step": step, "instance_status":
                        instance.status.value})
        return extra

    def _last_report(self, operation: Operation) -> str:
        row = operations_view.get(self.db, str(operation.id))
        return row["updated_at"] if row else "unknown"
