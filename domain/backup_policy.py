"""The `BackupPolicy` aggregate: a server's own backup retention, set by its owner.

`keep` automatic (scheduled) backups are kept; after each backup the oldest automatic ones beyond it are
pruned. None: the operator's default (`ZLH_BACKUP_RETENTION`) applies. One policy per server, its id derived
from the server's, so setting it twice at once is decided by optimistic concurrency.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError
from domain.ids import derive

#: The most automatic backups a policy may keep (the backups quota bounds them anyway).
MAX_KEEP = 1000


class RetentionInvalidError(DomainError):
    code = "validation_error"


def policy_id(instance_id: UUID) -> UUID:
    return derive("backup_policy", instance_id)


class BackupPolicy(Aggregate):
    TOPIC = "zlh.BackupPolicy"

    class Created(Aggregate.Created):
        TOPIC = "zlh.BackupPolicy.Created"
        instance_id: UUID

    class RetentionSet(Aggregate.Event):
        """`actor_id` set the server's retention to `keep` automatic backups (None: the operator's default)."""

        TOPIC = "zlh.BackupPolicy.RetentionSet"
        keep: int | None
        actor_id: UUID

    @staticmethod
    def create_id(instance_id: UUID) -> UUID:
        return policy_id(instance_id)

    @event(Created)
    def __init__(self, instance_id: UUID) -> None:
        self.instance_id = instance_id
        self.keep: int | None = None

    def set_retention(self, keep: int | None, actor_id: UUID) -> None:
        if keep is not None and not 1 <= keep <= MAX_KEEP:
            raise RetentionInvalidError(f"keep must be between 1 and {MAX_KEEP}, or null for the default")
        if keep != self.keep:
            self._retention_set(keep=keep, actor_id=actor_id)

    @event(RetentionSet)
    def _retention_set(self, keep: int | None, actor_id: UUID) -> None:
        self.keep = keep
