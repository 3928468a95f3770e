"""Use cases for schedules: create, change (pause and resume too), delete, and run now.

Every route reaches the schedule through its instance, checked like every instance route (another
customer's, a deleted schedule, or one of another server: 404). A schedule runs as its instance's
owner, whoever made it (an operator may make one for a customer). Creating one and running one now
pass the billing gate (402 `billing_suspended` while the account is suspended); changing, pausing
and deleting always work.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.errors import DomainError, IllegalTransitionError
from domain.lifecycle import InstanceStatus
from domain.schedule import Schedule, ScheduleRun, manual_run_id
from projections import schedules as schedules_view
from projections.base import Database
from services.billing import check_billing_gate
from services.infrastructure.store import ZLH
from services.lifecycle import NotFoundError, load_instance

#: Live schedules one server may have; one more is 409 `quota_exceeded` and nothing is written.
MAX_SCHEDULES_PER_INSTANCE = 20


class ScheduleQuotaError(DomainError):
    code = "quota_exceeded"


@dataclass(frozen=True)
class Written:
    id: UUID
    position: int
    replayed: bool = False


def _live_instance(app: ZLH, instance_id: UUID, owner_id: UUID | None) -> Any:
    instance = load_instance(app, instance_id, owner_id)
    if instance.status in (InstanceStatus.DELETING, InstanceStatus.DELETED):
        raise IllegalTransitionError(f"this server is {instance.status.value}: it takes no schedules")
    return instance


def load_schedule(app: ZLH, instance_id: UUID, schedule_id: UUID, owner_id: UUID | None) -> Schedule:
    """The instance's schedule if the caller may see the instance (`owner_id` None: an operator); else 404."""
    instance = load_instance(app, instance_id, owner_id)
    schedule = app.find(schedule_id, Schedule)
    if schedule is None or schedule.instance_id != instance.id or schedule.deleted:
        raise NotFoundError("no such schedule")
    return schedule


def create_schedule(app: ZLH, owner_id: UUID | None, actor_id: UUID, instance_id: UUID, fields: dict[str, Any],
                    now: datetime, db: Database | None = None) -> Written:
    """A new schedule; with `db` (the read models), refused past `MAX_SCHEDULES_PER_INSTANCE` (counted there, so
    requests racing at the limit may pass it by the few that overlap)."""
    instance = _live_instance(app, instance_id, owner_id)
    check_billing_gate(app, instance.owner_id, "create")
    if db is not None and len(schedules_view.for_instance_ids(db, str(instance.id))) >= MAX_SCHEDULES_PER_INSTANCE:
        raise ScheduleQuotaError(f"a server may have {MAX_SCHEDULES_PER_INSTANCE} schedules; delete one first")
    schedule = Schedule.define(
        instance_id=instance.id, owner_id=instance.owner_id, name=fields["name"], cron=fields["cron"],
        timezone=fields.get("timezone", "UTC"), only_when_running=fields.get("only_when_running", False),
        enabled=fields.get("enabled", True), tasks=fields["tasks"], now=now, actor_id=actor_id)
    return Written(schedule.id, app.save(schedule)[-1].notification.id)


def revise_schedule(app: ZLH, owner_id: UUID | None, actor_id: UUID, instance_id: UUID, schedule_id: UUID,
                    changes: dict[str, Any], now: datetime) -> Written:
    """Apply a partial change (optimistic concurrency with the timer: reload and apply again on a conflict)."""
    for _ in range(20):
        schedule = load_schedule(app, instance_id, schedule_id, owner_id)
        if not schedule.revise(now, actor_id, **changes):
            return Written(schedule.id, app.head())
        try:
            return Written(schedule.id, app.save(schedule)[-1].notification.id)
        except IntegrityError:
            continue  # the timer advanced meanwhile: apply the change to the fresh state
    raise RuntimeError("revise_schedule: too much contention")


def delete_schedule(app: ZLH, owner_id: UUID | None, actor_id: UUID, instance_id: UUID, schedule_id: UUID) -> int:
    for _ in range(20):
        schedule = load_schedule(app, instance_id, schedule_id, owner_id)
        schedule.delete(actor_id, "deleted")
        try:
            return app.save(schedule)[-1].notification.id
        except IntegrityError:
            continue
    raise RuntimeError("delete_schedule: too much contention")


def run_now(app: ZLH, owner_id: UUID | None, actor_id: UUID, instance_id: UUID, schedule_id: UUID, now: datetime,
            key: str | None = None) -> Written:
    """Plan a manual run of the schedule's tasks (even a paused one's); the schedules worker runs it at once.

    With an Idempotency-Key, the same key again answers with the same run.
    """
    schedule = load_schedule(app, instance_id, schedule_id, owner_id)
    _live_instance(app, instance_id, owner_id)
    check_billing_gate(app, schedule.owner_id, "start")
    run_id = manual_run_id(schedule.id, actor_id, key) if key is not None else uuid.uuid4()
    if key is not None and app.find(run_id, ScheduleRun) is not None:
        return Written(run_id, app.head(), replayed=True)
    run = ScheduleRun.plan(run_id, schedule, "manual", due_at=now, now=now, actor_id=actor_id)
    try:
        return Written(run.id, app.save(run)[-1].notification.id)
    except IntegrityError:
        return Written(run_id, app.head(), replayed=True)  # a concurrent request with the same key won
