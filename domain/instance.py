"""The `Instance` aggregate: a game server or dev container and its status machine.

An instance holds at most one pending (queued or running) operation; that is the
invariant that makes "one operation per instance at a time" true under concurrency,
because every operation begins with an event on the instance's stream.

Deletion is modelled with finalizers: `DeletionRequested` lists what must be removed
(proxy entry, DNS record, process, files, and backups if asked); each removal is
recorded by `FinalizerCompleted`; the instance is `deleted` only when none is left.
An interrupted delete resumes with the finalizers still outstanding.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import IllegalTransitionError, OperationInProgressError
from domain.ids import instance_id_for_operation
from domain.lifecycle import (
    InstanceKind,
    InstanceStatus,
    check_operation_allowed,
    check_transition,
    delete_finalizers,
)


class Instance(Aggregate):
    TOPIC = "zlh.Instance"

    class Event(Aggregate.Event):
        TOPIC = "zlh.Instance.Event"

    class Requested(Event, Aggregate.Created):
        """A customer asked for a new instance; `operation_id` is the create operation.

        `variables` are the template's variables as resolved when it was asked for (what the customer
        set, the defaults, generated tokens); events recorded before templates had variables have none.
        """

        TOPIC = "zlh.Instance.Requested"
        owner_id: UUID
        kind: str
        name: str
        template: str
        edge_name: str
        operation_id: UUID
        variables: dict[str, Any] | None = None

    class OperationBegun(Event):
        TOPIC = "zlh.Instance.OperationBegun"
        operation_id: UUID
        kind: str

    class Provisioned(Event):
        TOPIC = "zlh.Instance.Provisioned"
        operation_id: UUID
        port: int
        address: str

    class Started(Event):
        """The server runs again (after start, restart, or a restore of a running server)."""

        TOPIC = "zlh.Instance.Started"
        operation_id: UUID

    class Stopped(Event):
        TOPIC = "zlh.Instance.Stopped"
        operation_id: UUID

    class OperationCompleted(Event):
        """An operation that leaves the status as it was (backup, restore of a stopped server) ended."""

        TOPIC = "zlh.Instance.OperationCompleted"
        operation_id: UUID
        kind: str

    class DeletionRequested(Event):
        TOPIC = "zlh.Instance.DeletionRequested"
        operation_id: UUID
        finalizers: list[str]

    class FinalizerCompleted(Event):
        TOPIC = "zlh.Instance.FinalizerCompleted"
        operation_id: UUID
        finalizer: str

    class Deleted(Event):
        TOPIC = "zlh.Instance.Deleted"
        operation_id: UUID

    class Suspended(Event):
        """A suspension reason (e.g. `billing`) was added; a running server gets the stop `operation_id`."""

        TOPIC = "zlh.Instance.Suspended"
        reason: str
        was_running: bool
        operation_id: UUID | None

    class Unsuspended(Event):
        """A suspension reason was lifted; `status` is the result, `operation_id` a start of what it stopped."""

        TOPIC = "zlh.Instance.Unsuspended"
        reason: str
        status: str
        operation_id: UUID | None

    class OperationFailed(Event):
        """The pending operation failed; a failed create leaves the instance `failed`, and one that had
        already stopped the server (a restart or restore failing later) leaves it `stopped`."""

        TOPIC = "zlh.Instance.OperationFailed"
        operation_id: UUID
        kind: str
        code: str
        process_stopped: bool = False

    class Renamed(Event):
        """The server's display name changed (its public address, `edge_name`, stays what it was)."""

        TOPIC = "zlh.Instance.Renamed"
        name: str
        previous: str
        actor_id: UUID

    class Placed(Event):
        """The instance's node and port (README "More than one host"): chosen by a create, changed by a move."""

        TOPIC = "zlh.Instance.Placed"
        operation_id: UUID
        node_id: UUID
        port: int | None
        address: str | None = None

    @staticmethod
    def create_id(operation_id: UUID) -> UUID:
        """An instance's id derives from the operation that creates it."""
        return instance_id_for_operation(operation_id)

    @event(Requested)
    def __init__(
        self, owner_id: UUID, kind: str, name: str, template: str, edge_name: str, operation_id: UUID,
        variables: dict[str, Any] | None = None,
    ) -> None:
        self.owner_id = owner_id
        self.kind = InstanceKind(kind)
        self.name = name
        self.template = template
        self.variables: dict[str, Any] = dict(variables or {})
        self.edge_name = edge_name
        self.status = InstanceStatus.PROVISIONING
        self.pending_operation_id: UUID | None = operation_id
        self.port: int | None = None
        self.address: str | None = None
        self.finalizers: list[str] = []
        self.suspension_reasons: frozenset[str] = frozenset()
        self.resume_when_unsuspended = False

    # Commands: check the rule, then record an event that only assigns state.

    def begin_operation(self, operation_id: UUID, kind: str) -> None:
        """Start a start/stop/restart/backup/restore operation."""
        self._check_can_begin(kind)
        self._operation_begun(operation_id=operation_id, kind=kind)

    def begin_deletion(self, operation_id: UUID, keep_backups: bool) -> None:
        """Start (or resume) deleting: the outstanding finalizers are recorded on the instance."""
        self._check_can_begin("delete")
        if self.status is InstanceStatus.DELETING:
            finalizers = list(self.finalizers)  # resume: only what is still outstanding
            if not keep_backups and "backups" not in finalizers:
                finalizers.append("backups")
        else:
            finalizers = list(delete_finalizers(keep_backups))
        self._deletion_requested(operation_id=operation_id, finalizers=finalizers)

    def provision(self, operation_id: UUID, port: int, address: str) -> None:
        self._check_pending(operation_id)
        check_transition(self.status, InstanceStatus.RUNNING)
        self._provisioned(operation_id=operation_id, port=port, address=address)

    def mark_started(self, operation_id: UUID) -> None:
        self._check_pending(operation_id)
        if self.status is not InstanceStatus.RUNNING:
            check_transition(self.status, InstanceStatus.RUNNING)
        self._started(operation_id=operation_id)

    def mark_stopped(self, operation_id: UUID) -> None:
        self._check_pending(operation_id)
        check_transition(self.status, InstanceStatus.STOPPED)
        self._stopped(operation_id=operation_id)

    def complete_operation(self, operation_id: UUID, kind: str) -> None:
        self._check_pending(operation_id)
        self._operation_completed(operation_id=operation_id, kind=kind)

    def complete_finalizer(self, operation_id: UUID, finalizer: str) -> None:
        self._check_pending(operation_id)
        if finalizer not in self.finalizers:
            raise IllegalTransitionError(f"finalizer {finalizer} is not outstanding")
        self._finalizer_completed(operation_id=operation_id, finalizer=finalizer)

    def mark_deleted(self, operation_id: UUID) -> None:
        self._check_pending(operation_id)
        if self.finalizers:
            raise IllegalTransitionError(f"finalizers outstanding: {', '.join(self.finalizers)}")
        check_transition(self.status, InstanceStatus.DELETED)
        self._deleted(operation_id=operation_id)

    def fail_operation(self, operation_id: UUID, kind: str, code: str, process_stopped: bool = False) -> None:
        self._check_pending(operation_id)
        if kind == "create":
            check_transition(self.status, InstanceStatus.FAILED)
        stopped = process_stopped and self.status is InstanceStatus.RUNNING
        self._operation_failed(operation_id=operation_id, kind=kind, code=code, process_stopped=stopped)

    def suspend(self, reason: str, stop_operation_id: UUID | None = None) -> bool:
        """Add a suspension reason; a running server needs `stop_operation_id` (the stop, never a delete).

        False if the reason is already there. Waits for no operation: one pending is OperationInProgressError.
        """
        if reason in self.suspension_reasons:
            return False
        if self.pending_operation_id is not None:
            raise OperationInProgressError(f"operation {self.pending_operation_id} is still pending on this instance")
        if self.status not in (InstanceStatus.RUNNING, InstanceStatus.STOPPED, InstanceStatus.SUSPENDED):
            raise IllegalTransitionError(f"cannot suspend an instance that is {self.status}")
        was_running = self.status is InstanceStatus.RUNNING
        if was_running and stop_operation_id is None:
            raise IllegalTransitionError("suspending a running server needs a stop operation")
        self._suspended(reason=reason, was_running=was_running, operation_id=stop_operation_id if was_running else None)
        return True

    def unsuspend(self, reason: str, start_operation_id: UUID | None = None) -> bool:
        """Lift a reason; when none is left, start the server again only if a suspension stopped it."""
        if reason not in self.suspension_reasons:
            return False
        remaining = self.suspension_reasons - {reason}
        if self.status is not InstanceStatus.SUSPENDED:
            self._unsuspended(reason=reason, status=self.status.value, operation_id=None)
            return True
        start = not remaining and self.resume_when_unsuspended
        if start and (self.pending_operation_id is not None or start_operation_id is None):
            raise OperationInProgressError("the server can be started again once its pending operation is done")
        status = InstanceStatus.SUSPENDED if remaining else InstanceStatus.STOPPED
        self._unsuspended(reason=reason, status=status.value, operation_id=start_operation_id if start else None)
        return True

    def rename(self, name: str, actor_id: UUID) -> bool:
        """Give the server a new display name; False if it has it already. Not while an operation is pending
        (its worker writes this stream) nor once it is being deleted."""
        if name == self.name:
            return False
        if self.status in (InstanceStatus.DELETING, InstanceStatus.DELETED):
            raise IllegalTransitionError(f"cannot rename an instance that is {self.status}")
        if self.pending_operation_id is not None:
            raise OperationInProgressError(f"operation {self.pending_operation_id} is still pending on this instance")
        self._renamed(name=name, previous=self.name, actor_id=actor_id)
        return True

    def _check_can_begin(self, kind: str) -> None:
        if self.pending_operation_id is not None:
            raise OperationInProgressError(
                f"operation {self.pending_operation_id} is still pending on this instance"
            )
        check_operation_allowed(kind, self.status)

    def _check_pending(self, operation_id: UUID) -> None:
        if self.pending_operation_id != operation_id:
            raise IllegalTransitionError(f"operation {operation_id} is not the one pending on this instance")

    # Events: assign state only.

    @event(Renamed)
    def _renamed(self, name: str, previous: str, actor_id: UUID) -> None:
        self.name = name

    @event(OperationBegun)
    def _operation_begun(self, operation_id: UUID, kind: str) -> None:
        self.pending_operation_id = operation_id

    @event(DeletionRequested)
    def _deletion_requested(self, operation_id: UUID, finalizers: list[str]) -> None:
        self.pending_operation_id = operation_id
        self.status = InstanceStatus.DELETING
        self.finalizers = list(finalizers)

    @event(Provisioned)
    def _provisioned(self, operation_id: UUID, port: int, address: str) -> None:
        self.status = InstanceStatus.RUNNING
        self.port = port
        self.address = address
        self.pending_operation_id = None

    @event(Started)
    def _started(self, operation_id: UUID) -> None:
        self.status = InstanceStatus.RUNNING
        self.pending_operation_id = None

    @event(Stopped)
    def _stopped(self, operation_id: UUID) -> None:
        self.status = InstanceStatus.SUSPENDED if self.suspension_reasons else InstanceStatus.STOPPED
        self.pending_operation_id = None

    @event(Suspended)
    def _suspended(self, reason: str, was_running: bool, operation_id: UUID | None) -> None:
        self.suspension_reasons = self.suspension_reasons | {reason}
        self.status = InstanceStatus.SUSPENDED
        self.resume_when_unsuspended = self.resume_when_unsuspended or was_running
        if operation_id is not None:
            self.pending_operation_id = operation_id

    @event(Unsuspended)
    def _unsuspended(self, reason: str, status: str, operation_id: UUID | None) -> None:
        self.suspension_reasons = self.suspension_reasons - {reason}
        self.status = InstanceStatus(status)
        if not self.suspension_reasons:
            self.resume_when_unsuspended = False
        if operation_id is not None:
            self.pending_operation_id = operation_id

    @event(OperationCompleted)
    def _operation_completed(self, operation_id: UUID, kind: str) -> None:
        self.pending_operation_id = None

    @event(FinalizerCompleted)
    def _finalizer_completed(self, operation_id: UUID, finalizer: str) -> None:
        self.finalizers = [f for f in self.finalizers if f != finalizer]

    @event(Deleted)
    def _deleted(self, operation_id: UUID) -> None:
        self.status = InstanceStatus.DELETED
        self.pending_operation_id = None
        self.address = None

    @event(OperationFailed)
    def _operation_failed(self, operation_id: UUID, kind: str, code: str, process_stopped: bool = False) -> None:
        if kind == "create":
            self.status = InstanceStatus.FAILED
        elif process_stopped:
            self.status = InstanceStatus.STOPPED
        self.pending_operation_id = None

    # Placement (README "More than one host"): which node the instance lives on.

    def place(self, operation_id: UUID, node_id: UUID, port: int | None, address: str | None = None) -> None:
        """Record the node (a create's placement), or the node, port and address a move ends on."""
        self._check_pending(operation_id)
        self._placed(operation_id=operation_id, node_id=node_id, port=port, address=address)

    @event(Placed)
    def _placed(self, operation_id: UUID, node_id: UUID, port: int | None, address: str | None = None) -> None:
        self.node_id = node_id
        self.placed_port = port
        if address is not None:  # a move: the server now answers there
            self.port = port
            self.address = address
