"""Use cases' quotas: how many instances a customer, backups an instance and tickets a customer a day may have.

`Quotas` holds the limits (None: no limit) and loads the `Quota` aggregate a use case saves
with what it creates (domain/quota.py): the store decides, so concurrent requests never
overshoot. The first time a quota is opened for a customer or instance that already had things
before quotas existed, it starts with those, read from the read models (`db`).

A deleted backup's slot is freed in the same save as its deletion (nothing else writes that
quota meanwhile: the instance runs one operation at a time). A deleted instance's slot is freed
right after the deletion is saved (`free_slot`), because the owner may be creating another at
that moment; should that ever not happen (a crash between the two saves), the next create that
finds the quota full frees the slots of instances that are deleted (`take_instance_slot`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.instance import Instance
from domain.lifecycle import InstanceStatus
from domain.quota import BACKUPS, INSTANCES, TICKETS, Quota, QuotaExceededError, ticket_quota_subject
from projections import backups as backups_view
from projections import instances as instances_view
from projections import tickets as tickets_view
from projections.base import Database
from services.infrastructure.store import ZLH

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quotas:
    instances_per_user: int | None = None
    backups_per_instance: int | None = None
    tickets_per_day: int | None = None
    db: Database | None = None  # to count what existed before quotas did

    def instances(self, app: ZLH, owner_id: UUID) -> Quota:
        return _open(app, INSTANCES, str(owner_id), lambda db: [
            UUID(r["id"]) for r in instances_view.list_for_owner(db, str(owner_id))], self.db)

    def backups(self, app: ZLH, instance_id: UUID) -> Quota:
        return _open(app, BACKUPS, str(instance_id), lambda db: [
            UUID(r["id"]) for r in backups_view.list_for_instance(db, str(instance_id)) if r["status"] != "deleted"],
            self.db)

    def tickets(self, app: ZLH, owner_id: UUID, day: str) -> Quota:
        return _open(app, TICKETS, ticket_quota_subject(owner_id, day), lambda db: [
            UUID(r["id"]) for r in tickets_view.list_for_owner(db, str(owner_id)) if r["created_at"].startswith(day)],
            self.db)


#: No limits (tests and tools that create freely); the quotas are still kept.
UNLIMITED = Quotas()


def _open(app: ZLH, kind: str, subject: str, existing: Callable[[Database], list[UUID]],
          db: Database | None) -> Quota:
    quota = app.find(Quota.create_id(kind, subject), Quota)
    if quota is None:
        quota = Quota(kind=kind, subject=subject, held=existing(db) if db is not None else [])
    return quota


def release(app: ZLH, kind: str, subject: str, *slots: UUID) -> list[Quota]:
    """Free `slots` in a quota where it holds them: the quota to save with the deletion, or nothing."""
    quota = app.find(Quota.create_id(kind, subject), Quota)
    if quota is None:
        return []
    freed = [quota.release(slot) for slot in slots]
    return [quota] if any(freed) else []


def free_slot(app: ZLH, kind: str, subject: str, slot: UUID) -> None:
    """Free `slot` in its own save, looking again when a concurrent request moved the quota."""
    for _ in range(50):
        quota = release(app, kind, subject, slot)
        if not quota:
            return
        try:
            app.save(*quota)
            return
        except IntegrityError:
            continue
    log.warning("could not free %s slot %s of %s under contention; the next create at the limit will", kind, slot,
                subject)


def take_instance_slot(app: ZLH, quota: Quota, instance_id: UUID, limit: int | None) -> None:
    """Take a slot for a new instance; at the limit, first free the slots of instances that are deleted."""
    try:
        quota.take(instance_id, limit)
    except QuotaExceededError:
        deleted = [slot for slot in quota.held
                   if (held := app.find(slot, Instance)) is not None and held.status is InstanceStatus.DELETED]
        if not deleted:
            raise
        for slot in deleted:
            quota.release(slot)
        quota.take(instance_id, limit)
