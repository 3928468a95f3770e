"""Hypothesis: any interleaving of power/backup/restore/delete requests, worker runs and driver failures
never leaves two operations pending on an instance, and always ends in a state the log explains."""

from __future__ import annotations

from uuid import UUID, uuid4

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from domain.errors import DomainError
from domain.instance import Instance
from domain.lifecycle import InstanceStatus
from domain.operation import Operation, Phase
from projections import instances as instances_view
from services.instances import request_instance
from services.lifecycle import request_backup, request_delete, request_power, request_restore
from services.ports import DriverError, InstanceSpec
from tests.property.machines import StoreMachine

STEPS = ["start_process", "stop_process", "wait_connectable", "create_backup", "restore_backup",
         "unregister", "remove_directory"]


class LifecycleMachine(StoreMachine):
    def __init__(self) -> None:
        super().__init__()
        self.owner = uuid4()
        accepted = request_instance(self.app, self.owner, "create", "game", "alpha", "minecraft")
        self.instance_id = accepted.instance_id
        self.operations: list[UUID] = [accepted.operation_id]
        self.backups: list[UUID] = []

    def instance(self) -> Instance:
        return self.app.repository.get(self.instance_id)

    def _try(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        try:
            queued = fn(self.app, self.owner, self.instance_id, *args)
        except DomainError:
            return
        self.operations.append(queued.operation_id)
        if queued.backup_id is not None:
            self.backups.append(queued.backup_id)

    @rule(action=st.sampled_from(["start", "stop", "restart"]))
    def power(self, action: str) -> None:
        self._try(request_power, action)

    @rule()
    def backup(self) -> None:
        self._try(request_backup)

    @rule(pick=st.integers(0, 3))
    def restore(self, pick: int) -> None:
        if self.backups:
            self._try(request_restore, self.backups[pick % len(self.backups)])

    @rule(keep=st.booleans())
    def delete(self, keep: bool) -> None:
        self._try(request_delete, keep)

    @rule(step=st.sampled_from(STEPS))
    def break_next(self, step: str) -> None:
        target = self.edge.proxy if step == "unregister" else self.driver  # the proxy entry's removal, or a node step
        target.fail_on[step] = DriverError("injected", f"{step} failed")

    @rule()
    def work(self) -> None:
        """The worker claims and runs whatever is pending (failures are recorded, never retried)."""
        pending = self.run_pending(self.instance_id)
        if pending is not None:
            self.driver.fail_on.clear()
            self.edge.proxy.fail_on.clear()
            done: Operation = self.app.repository.get(pending)
            event(f"{done.kind.value} {done.phase.value}")

    @invariant()
    def at_most_one_pending_operation(self) -> None:
        ops: list[Operation] = [self.app.repository.get(o) for o in self.operations]
        pending = [o for o in ops if o.phase in (Phase.QUEUED, Phase.RUNNING)]
        assert len(pending) <= 1
        assert self.instance().pending_operation_id == (pending[0].id if pending else None)

    @invariant()
    def the_log_explains_the_state(self) -> None:
        instance = self.instance()
        self.catch_up()
        row = instances_view.get(self.db, str(self.instance_id))
        assert row is not None and row["status"] == instance.status.value
        assert row["pending_operation_id"] == (str(instance.pending_operation_id)
                                               if instance.pending_operation_id else None)
        spec = InstanceSpec(instance.id, "game", "minecraft", instance.edge_name)
        last: Operation = self.app.repository.get(self.operations[-1])
        if instance.pending_operation_id is None and last.phase is Phase.SUCCEEDED:
            if instance.status is InstanceStatus.RUNNING:
                assert self.driver.is_running(spec, instance.port or 0)
            if instance.status is InstanceStatus.STOPPED:
                assert not self.driver.is_running(spec, instance.port or 0)
        if instance.status is InstanceStatus.DELETED:
            assert instance.id not in self.driver.directories
            assert self.edge.dns.list_records() == [] and self.edge.proxy.list_servers() == {}

TestLifecycleInterleavings = LifecycleMachine.TestCase
