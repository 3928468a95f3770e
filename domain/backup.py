"""The `Backup` aggregate: one archive of an instance's files and its manifest."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import IllegalTransitionError
from domain.ids import derive


def backup_id_for_operation(operation_id: UUID) -> UUID:
    return derive("backup", operation_id)


class Backup(Aggregate):
    TOPIC = "zlh.Backup"

    class Event(Aggregate.Event):
        TOPIC = "zlh.Backup.Event"

    class Requested(Event, Aggregate.Created):
        TOPIC = "zlh.Backup.Requested"
        instance_id: UUID
        owner_id: UUID
        operation_id: UUID

    class Completed(Event):
        """The archive exists; the manifest says how to verify it."""

        TOPIC = "zlh.Backup.Completed"
        size: int
        sha256: str
        archived_at: str
        path: str

    class Failed(Event):
        TOPIC = "zlh.Backup.Failed"
        code: str
        message: str

    class Deleted(Event):
        TOPIC = "zlh.Backup.Deleted"
        operation_id: UUID

    @staticmethod
    def create_id(operation_id: UUID) -> UUID:
        return backup_id_for_operation(operation_id)

    @event(Requested)
    def __init__(self, instance_id: UUID, owner_id: UUID, operation_id: UUID) -> None:
        self.instance_id = instance_id
        self.owner_id = owner_id
        self.operation_id = operation_id
        self.status = "pending"
        self.manifest: dict[str, object] | None = None

    def complete(self, size: int, sha256: str, archived_at: str, path: str) -> None:
        if self.status != "pending":
            raise IllegalTransitionError(f"backup is {self.status}")
        self._completed(size=size, sha256=sha256, archived_at=archived_at, path=path)

    def fail(self, code: str, message: str) -> None:
        if self.status != "pending":
            raise IllegalTransitionError(f"backup is {self.status}")
        self._failed(code=code, message=message)

    def check_restorable(self) -> None:
        if self.status != "completed":
            raise IllegalTransitionError(f"backup is {self.status}, not completed")

    def delete(self, operation_id: UUID) -> None:
        if self.status != "deleted":
            self._deleted(operation_id=operation_id)

    @event(Completed)
    def _completed(self, size: int, sha256: str, archived_at: str, path: str) -> None:
        self.status = "completed"
        self.manifest = {"size": size, "sha256": sha256, "created_at": archived_at, "path": path}

    @event(Failed)
    def _failed(self, code: str, message: str) -> None:
        self.status = "failed"

    @event(Deleted)
    def _deleted(self, operation_id: UUID) -> None:
        self.status = "deleted"
