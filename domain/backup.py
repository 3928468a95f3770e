"""The `Backup` aggregate: one archive of an instance's files and its manifest.

Statuses: `pending` (being made) -> `completed` | `failed`; a customer's deletion is
`deleting` while the node agent removes the archive, then `deleted` (or back to what it was,
if the deletion failed). A backup being made cannot be deleted; one being deleted cannot be
restored. The instance's one-operation-at-a-time rule keeps a deletion and a restore apart.

Where the archive is: `local` (the node's disk, the default) or, once `StoredOffsite`, `s3` under `key`
(the node's copy removed). Retention prunes old automatic backups: `Pruned` is a deletion the operator's
policy made (which policy, in `reason`), not the customer.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import IllegalTransitionError, OperationInProgressError
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

    class DeletionRequested(Event):
        """The customer asked for the backup to be deleted; `operation_id` removes the archive."""

        TOPIC = "zlh.Backup.DeletionRequested"
        operation_id: UUID

    class DeletionFailed(Event):
        """The archive could not be removed; the backup is `status` again, what it was before."""

        TOPIC = "zlh.Backup.DeletionFailed"
        operation_id: UUID
        code: str
        status: str

    class StoredOffsite(Event):
        """The archive was uploaded to object storage (`location`, e.g. `s3`) as `key`, in `parts` parts."""

        TOPIC = "zlh.Backup.StoredOffsite"
        location: str
        key: str
        parts: int

    class Pruned(Event):
        """Retention removed this backup's archive during `operation_id` (another backup of the server)."""

        TOPIC = "zlh.Backup.Pruned"
        operation_id: UUID
        reason: str

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
        self.deletion_operation_id: UUID | None = None
        self.status_before_deletion: str | None = None
        self.location = "local"
        self.key: str | None = None

    def complete(self, size: int, sha256: str, archived_at: str, path: str) -> None:
        if self.status != "pending":
            raise IllegalTransitionError(f"backup is {self.status}")
        self._completed(size=size, sha256=sha256, archived_at=archived_at, path=path)

    def fail(self, code: str, message: str) -> None:
        if self.status != "pending":
            raise IllegalTransitionError(f"backup is {self.status}")
        self._failed(code=code, message=message)

    def store_offsite(self, location: str, key: str, parts: int) -> None:
        """Record where the archive went; done in the same save as `complete`."""
        if self.status not in ("pending", "completed") or self.location != "local":
            raise IllegalTransitionError(f"backup is {self.status} in {self.location}")
        self._stored_offsite(location=location, key=key, parts=parts)

    def prune(self, operation_id: UUID, reason: str) -> None:
        """Retention's deletion of a completed backup (its archive removed already)."""
        if self.status != "completed":
            raise IllegalTransitionError(f"backup is {self.status}, only completed ones are pruned")
        self._pruned(operation_id=operation_id, reason=reason)

    def check_restorable(self) -> None:
        if self.status != "completed":
            raise IllegalTransitionError(f"backup is {self.status}, not completed")

    def request_deletion(self, operation_id: UUID) -> None:
        """Start deleting (or start again, after an interrupted deletion)."""
        if self.status == "pending":
            raise OperationInProgressError("the backup is still being made; delete it once it is done")
        if self.status == "deleted":
            raise IllegalTransitionError("the backup is already deleted")
        self._deletion_requested(operation_id=operation_id)

    def deletion_failed(self, operation_id: UUID, code: str) -> None:
        if self.status == "deleting" and self.deletion_operation_id == operation_id:
            self._deletion_failed(operation_id=operation_id, code=code,
                                  status=self.status_before_deletion or "completed")

    def delete(self, operation_id: UUID) -> None:
        if self.status != "deleted":
            self._deleted(operation_id=operation_id)

    @event(Completed)
    def _completed(self, size: int, sha256: str, archived_at: str, path: str) -> None:
        self.status = "completed"
        self.manifest = {"size": size, "sha256": sha256, "created_at": archived_at, "path": path}

    @event(StoredOffsite)
    def _stored_offsite(self, location: str, key: str, parts: int) -> None:
        self.location = location
        self.key = key

    @event(Pruned)
    def _pruned(self, operation_id: UUID, reason: str) -> None:
        self.status = "deleted"

    @event(Failed)
    def _failed(self, code: str, message: str) -> None:
        self.status = "failed"

    @event(Deleted)
    def _deleted(self, operation_id: UUID) -> None:
        self.status = "deleted"

    @event(DeletionRequested)
    def _deletion_requested(self, operation_id: UUID) -> None:
        if self.status != "deleting":
            self.status_before_deletion = self.status
        self.status = "deleting"
        self.deletion_operation_id = operation_id

    @event(DeletionFailed)
    def _deletion_failed(self, operation_id: UUID, code: str, status: str) -> None:
        self.status = status
        self.deletion_operation_id = None
