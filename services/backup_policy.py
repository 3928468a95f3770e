"""Use cases of a server's backup retention: read it, and set it (its owner, or an operator).

The effective retention is the server's own `keep` when set, else the operator's `ZLH_BACKUP_RETENTION`
(None: automatic backups are kept until the backups quota is reached). The provisioning worker applies it
after each backup (`services.workers.provisioning`).
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.backup_policy import BackupPolicy, policy_id
from services.infrastructure.store import ZLH
from services.lifecycle import load_instance


@dataclass(frozen=True)
class Retention:
    keep: int | None
    default: int | None
    position: int = 0

    @property
    def effective(self) -> int | None:
        return self.keep if self.keep is not None else self.default


def retention_of(app: ZLH, instance_id: UUID, default: int | None) -> Retention:
    """The server's retention (no owner check: for workers)."""
    policy = app.find(policy_id(instance_id), BackupPolicy)
    return Retention(policy.keep if policy is not None else None, default)


def backup_retention(app: ZLH, owner_id: UUID | None, instance_id: UUID, default: int | None) -> Retention:
    load_instance(app, instance_id, owner_id)
    return retention_of(app, instance_id, default)


def set_backup_retention(app: ZLH, owner_id: UUID | None, instance_id: UUID, keep: int | None, actor_id: UUID,
                         default: int | None) -> Retention:
    """Set (or with None, clear) the server's own retention; 404 for another's server."""
    instance = load_instance(app, instance_id, owner_id)
    for _ in range(5):
        policy = app.find(policy_id(instance.id), BackupPolicy) or BackupPolicy(instance_id=instance.id)
        policy.set_retention(keep, actor_id)
        if not policy.pending_events:
            return Retention(policy.keep, default, app.head())
        try:
            recordings = app.save(policy)
        except IntegrityError:
            continue  # set at the same moment by another request: decide again on its result
        return Retention(policy.keep, default, recordings[-1].notification.id)
    raise RuntimeError("too much contention on this server's backup policy")
