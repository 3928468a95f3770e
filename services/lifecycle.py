"""Use cases for an existing instance: power, backup, restore, delete.

Each writes the `Operation` and the instance's `OperationBegun` (or
`DeletionRequested`) in one atomic save, so "one pending operation per instance"
is decided by the instance stream's optimistic concurrency. An optional
Idempotency-Key makes a retry replay the first answer, as for create. `actor_id` is who asked (the
owner when not given; an operator acting on a customer's server; a schedule's owner), `origin` what
asked when not a person directly (`schedule_run:ID`): both are recorded on the operation, for the
activity log.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.backup import Backup, backup_id_for_operation
from domain.errors import DomainError
from domain.ids import operation_id_for_key
from domain.instance import Instance
from domain.operation import Operation
from services.billing import check_billing_gate
from services.infrastructure.store import ZLH
from services.instances import fingerprint, prior_operation


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


def request_backup(app: ZLH, owner_id: UUID, instance_id: UUID, key: str | None = None, *,
                   actor_id: UUID | None = None, origin: str | None = None) -> Queued:
    def begin(instance: Instance, op: Operation) -> list[Any]:
        check_billing_gate(app, instance.owner_id, "backup")
        instance.begin_operation(op.id, "backup")
        return [Backup(instance_id=instance.id, owner_id=instance.owner_id, operation_id=op.id)]

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
) -> Queued:
    request_key = key if key is not None else f"auto:{uuid.uuid4()}"
    print_ = fingerprint(f"{kind} {instance_id}", params)
    for _ in range(10):
        replay = _replay(app, operation_id_for_key(owner_id, request_key), print_)
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
