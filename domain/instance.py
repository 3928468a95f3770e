"""The `Instance` aggregate: a game server or dev container and its status machine.

An instance holds at most one pending (queued or running) operation; that is the
invariant that makes "one operation per instance at a time" true under concurrency,
because every operation begins with an event on the instance's stream.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import IllegalTransitionError, OperationInProgressError
from domain.ids import instance_id_for_operation
from domain.lifecycle import InstanceKind, InstanceStatus, check_transition


class Instance(Aggregate):
    TOPIC = "zlh.Instance"

    class Event(Aggregate.Event):
        TOPIC = "zlh.Instance.Event"

    class Requested(Event, Aggregate.Created):
        """A customer asked for a new instance; `operation_id` is the create operation."""

        TOPIC = "zlh.Instance.Requested"
        owner_id: UUID
        kind: str
        name: str
        template: str
        edge_name: str
        operation_id: UUID

    class OperationBegun(Event):
        TOPIC = "zlh.Instance.OperationBegun"
        operation_id: UUID
        kind: str

    class Provisioned(Event):
        TOPIC = "zlh.Instance.Provisioned"
        operation_id: UUID
        port: int
        address: str

    class OperationFailed(Event):
        """The pending operation failed; a failed create leaves the instance `failed`."""

        TOPIC = "zlh.Instance.OperationFailed"
        operation_id: UUID
        kind: str
        code: str

    @staticmethod
    def create_id(operation_id: UUID) -> UUID:
        """An instance's id derives from the operation that creates it."""
        return instance_id_for_operation(operation_id)

    @event(Requested)
    def __init__(
        self, owner_id: UUID, kind: str, name: str, template: str, edge_name: str, operation_id: UUID
    ) -> None:
        self.owner_id = owner_id
        self.kind = InstanceKind(kind)
        self.name = name
        self.template = template
        self.edge_name = edge_name
        self.status = InstanceStatus.PROVISIONING
        self.pending_operation_id: UUID | None = operation_id
        self.port: int | None = None
        self.address: str | None = None

    # Commands: check the rule, then record an event that only assigns state.

    def begin_operation(self, operation_id: UUID, kind: str) -> None:
        if self.pending_operation_id is not None:
            raise OperationInProgressError(
                f"operation {self.pending_operation_id} is still pending on this instance"
            )
        if self.status is InstanceStatus.DELETED:
            raise IllegalTransitionError("the instance is deleted")
        self._operation_begun(operation_id=operation_id, kind=kind)

    def provision(self, operation_id: UUID, port: int, address: str) -> None:
        self._check_pending(operation_id)
        check_transition(self.status, InstanceStatus.RUNNING)
        self._provisioned(operation_id=operation_id, port=port, address=address)

    def fail_operation(self, operation_id: UUID, kind: str, code: str) -> None:
        self._check_pending(operation_id)
        if kind == "create":
            check_transition(self.status, InstanceStatus.FAILED)
        self._operation_failed(operation_id=operation_id, kind=kind, code=code)

    def _check_pending(self, operation_id: UUID) -> None:
        if self.pending_operation_id != operation_id:
            raise IllegalTransitionError(f"operation {operation_id} is not the one pending on this instance")

    @event(OperationBegun)
    def _operation_begun(self, operation_id: UUID, kind: str) -> None:
        self.pending_operation_id = operation_id

    @event(Provisioned)
    def _provisioned(self, operation_id: UUID, port: int, address: str) -> None:
        self.status = InstanceStatus.RUNNING
        self.port = port
        self.address = address
        self.pending_operation_id = None

    @event(OperationFailed)
    def _operation_failed(self, operation_id: UUID, kind: str, code: str) -> None:
        if kind == "create":
            self.status = InstanceStatus.FAILED
        self.pending_operation_id = None
