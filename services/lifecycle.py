"""Use cases for an existing instance: power, backup, restore, delete, and deleting a backup.

Each writes the `Operation` and the instance's `OperationBegun` (or
`DeletionRequested`) in one atomic save, so "one pending operation per instance"
is decided by the instance stream's optimistic concurrency. An optional
Idempotency-Key makes a retry replay the first answer, as for create. `actor_id` is who asked (the
owner when not given; an operator acting on a customer's server; a schedule's owner), `origin` what
asked when not a person directly (`schedule_run:ID`): both are recorded on the operation, for the
activity log.

A backup takes a slot of its instance's backups `Quota` in the same save; deleting it
(an operation: the node agent removes the archive) frees the slot when it is done.
Deleting a backup is the customer's choice in every billing state, and it is an
operation on the instance like the others, so it never runs beside a restore.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.backup import Backup, backup_id_for_operation
from domain.errors import DomainError, OperationInProgressError
from domain.ids import operation_id_for_key
from domain.instance import Instance
from domain.operation import Operation
from services.billing import check_billing_gate
from services.infrastructure.store import ZLH
from services.instances import fingerprint, prior_operation
from services.quotas import UNLIMITED, Quotas


class NotFoundError(DomainError):
    code = "not_found"


@dataclass(frozen=True)
class Queued:
    operation_id: UUID
    replayed: bool
    position: int
    backup_id: UUID | None = None


def load_instance(app: ZLH, instance_id: UUID, owner_id: UUID | None) -> Instance:
    """The instance if it exists and `owner_id` owns it (None: any owner, for admins)."""
    instance = app.find(instance_id, Instance)
    if instance is None or (owner_id is not None and instance.owner_id != owner_id):
        raise NotFoundError("no such instance")
    return instance


def request_power(app: ZLH, owner_id: UUID, instance_id: UUID, action: str, key: str | None = None, *,
                  actor_id: UUID | None = None, origin: str | None = None) -> Queued:
    def begin(instance: Instance, op: Operation) -> None:
        check_billing_gate(app, instance.owner_id, action)  # start and restart: 402 while suspended
        instance.begin_operation(op.id, action)

    return _request(app, owner_id, instance_id, action, {"action": action}, key, begin, actor_id, origin)


def request_delete(app: ZLH, owner_id: UUID, instance_id: UUID, keep_backups: bool, key: str | None = None, *,
                   actor_id: UUID | None = None) -> Queued:
    return _request(app, owner_id, instance_id, "delete", {"keep_backups": keep_backups}, key,
                    lambda instance, op: instance.begin_deletion(op.id, keep_backups), actor_id)


def request_backup(app: ZLH, owner_id: UUID, instance_id: UUID, key: str | None = None,
                   quotas: Quotas = UNLIMITED, *, actor_id: UUID | None = None, origin: str | None = None) -> Queued:
    def begin(instance: Instance, op: Operation) -> list[Any]:
        check_billing_gate(app, instance.owner_id, "backup")
        instance.begin_operation(op.id, "backup")
        backup = Backup(instance_id=instance.id, owner_id=instance.owner_id, operation_id=op.id)
        quota = quotas.backups(app, instance.id)
        quota.take(backup.id, quotas.backups_per_instance)
        return [backup, quota]

    return _request(app, owner_id, instance_id, "backup", {}, key, begin, actor_id, origin)


def request_restore(app: ZLH, owner_id: UUID, instance_id: UUID, backup_id: UUID, key: str | None = None, *,
                    actor_id: UUID | None = None) -> Queued:
    def begin(instance: Instance, op: Operation) -> None:
        backup = app.find(backup_id, Backup)
        if backup is None or backup.instance_id != instance.id:
            raise NotFoundError("no such backup")
        backup.check_restorable()
        check_billing_gate(app, instance.owner_id, "restore")
        instance.begin_operation(op.id, "restore")

    return _request(app, owner_id, instance_id, "restore", {"backup_id": str(backup_id)}, key, begin, actor_id)


class BackupGoneError(Exception):
    """The backup to delete is deleted already: nothing to do."""


def request_backup_deletion(app: ZLH, owner_id: UUID | None, backup_id: UUID, instance_id: UUID | None = None,
                            key: str | None = None, *, actor_id: UUID | None = None) -> Queued | None:
    """Delete a backup through the node agent (an operation); None if it is deleted already.

    `owner_id` None: any owner's (admins). `instance_id`: the backup must be that instance's. A backup
    whose deletion is already under way answers with that operation. Not a billing gate: always allowed.
    """
    def load() -> Backup:
        backup = app.find(backup_id, Backup)
        if backup is None or (owner_id is not None and backup.owner_id != owner_id) or (
                instance_id is not None and backup.instance_id != instance_id):
            raise NotFoundError("no such backup")
        return backup

    def under_way() -> Queued | None:
        backup = load()
        if backup.status == "deleted":
            raise BackupGoneError
        running = app.find(backup.deletion_operation_id, Operation) if backup.deletion_operation_id else None
        return Queued(running.id, False, app.head(), backup.id) if running is not None and running.is_pending \
            else None

    def begin(instance: Instance, op: Operation) -> list[Any]:
        backup = load()
        instance.begin_operation(op.id, "delete_backup")
        backup.request_deletion(op.id)
        return [backup]

    try:
        backup = load()
        try:
            return _request(app, backup.owner_id, backup.instance_id, "delete_backup",
                            {"backup_id": str(backup_id)}, key, begin, actor_id=actor_id, under_way=under_way)
        except OperationInProgressError:
            queued = under_way()  # a concurrent request for the same deletion won the instance: that answer
            if queued is None:
                raise
            return queued
    except BackupGoneError:
        return None


def _request(
    app: ZLH,
    owner_id: UUID,
    instance_id: UUID,
    kind: str,
    params: dict[str, Any],
    key: str | None,
    begin: Callable[[Instance, Operation], Any],
    actor_id: UUID | None = None,
    origin: str | None = None,
    under_way: Callable[[], Queued | None] = lambda: None,
) -> Queued:
    """Record `kind` on the instance; `under_way` may answer first with an operation already doing it."""
    request_key = key if key is not None else f"auto:{uuid.uuid4()}"
    print_ = fingerprint(f"{kind} {instance_id}", params)
    for _ in range(10):
        replay = _replay(app, operation_id_for_key(owner_id, request_key), print_) or under_way()
        if replay is not None:
            return replay
        instance = load_instance(app, instance_id, owner_id)
        operation = Operation(request_key=request_key, kind=kind, instance_id=instance.id, owner_id=owner_id,
                              fingerprint=print_, params=params, actor_id=actor_id, origin=origin)
        extra = begin(instance, operation) or []
        try:
            recordings = app.save(operation, instance, *extra)
        except IntegrityError:
            continue  # the instance moved (another request won): decide again on fresh state
        backup_id = next((a.id for a in extra if isinstance(a, Backup)), None)
        return Queued(operation.id, False, recordings[-1].notification.id, backup_id)
    raise RuntimeError("too much contention on this instance")


def _replay(app: ZLH, operation_id: UUID, print_: str) -> Queued | None:
    operation = prior_operation(app, operation_id, print_)
    if operation is None:
        return None
    backup_id = backup_id_for_operation(operation.id) if operation.kind.value == "backup" else None
    return Queued(operation.id, True, app.head(), backup_id)
