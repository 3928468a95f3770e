"""Use case: the controller's soak report (`GET /api/admin/repairs/report`, `zlh controller report`).

Reads the repairs recorded since a moment from the repairs read model, and from the log when each
instance was suspended (its own `Instance.Suspended`/`Unsuspended`, its owner's billing suspension)
and how often each target's drift changed; `domain.soak.soak_report` does the rest.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from domain.billing import BillingAccount
from domain.instance import Instance
from domain.repair import Drift
from domain.soak import Interval, RepairRecord, soak_report
from projections import repairs as repairs_view
from projections.base import Database, iso, parse_iso
from services.infrastructure.store import ZLH

_TOPICS = (Instance.Suspended.TOPIC, Instance.Unsuspended.TOPIC, BillingAccount.Opened.TOPIC,
           BillingAccount.Suspended.TOPIC, BillingAccount.Restored.TOPIC, Drift.FindingsChanged.TOPIC)


def _history(app: ZLH, since: datetime) -> tuple[dict[str, list[Interval]], dict[str, list[Interval]], Counter[str]]:
    """(suspension intervals per instance, per user, drift changes per target since `since`)."""
    per_instance: dict[str, list[Interval]] = {}
    per_user: dict[str, list[Interval]] = {}
    account_user: dict[str, str] = {}
    changes: Counter[str] = Counter()
    position = 0
    while True:
        page = app.recorder.select_notifications(start=position, limit=1000, topics=_TOPICS,
                                                 inclusive_of_start=False)
        if not page:
            break
        for notification in page:
            event = app.mapper.to_domain_event(notification)
            at = event.timestamp
            if isinstance(event, Drift.FindingsChanged):
                if at >= since:
                    changes[event.target] += 1
                continue
            if isinstance(event, BillingAccount.Opened):
                account_user[str(event.originator_id)] = str(event.user_id)
                continue
            if isinstance(event, Instance.Suspended | Instance.Unsuspended):
                key, table = str(event.originator_id), per_instance
            else:
                user = account_user.get(str(event.originator_id))
                if user is None:
                    continue
                key, table = user, per_user
            intervals = table.setdefault(key, [])
            open_now = bool(intervals) and intervals[-1][1] is None
            if isinstance(event, Instance.Suspended | BillingAccount.Suspended):
                if not open_now:
                    intervals.append((at, None))
            elif open_now:
                intervals[-1] = (intervals[-1][0], at)
        position = page[-1].id
    return per_instance, per_user, changes


def report(app: ZLH, db: Database, since: datetime, mode: str, now: datetime | None = None) -> dict[str, Any]:
    until = (now or datetime.now(UTC)).astimezone(UTC)
    rows = repairs_view.since(db, iso(since))
    owners = {r["id"]: r["owner_id"] for r in db.query("SELECT id, owner_id FROM rm_instances")}
    per_instance, per_user, changes = _history(app, since)
    suspended: dict[str, list[Interval]] = {}
    for instance_id, owner in owners.items():
        intervals = per_instance.get(instance_id, []) + per_user.get(owner, [])
        if intervals:
            suspended[instance_id] = intervals
    records = [RepairRecord(id=r["id"], kind=r["kind"], level=r["level"], target=r["target"],
                            instance_id=r["instance_id"], status=r["status"], reason=r["reason"], mode=r["mode"],
                            created_at=parse_iso(r["created_at"])) for r in rows]
    return soak_report(records, suspended, since.astimezone(UTC), until, mode, changes)
