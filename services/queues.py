"""Use cases for operators watching queues: for each process manager, what is pending, for how long,
and how far behind the log it is.

The same figures feed `GET /api/admin/queues` and the Prometheus gauges.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from projections.base import parse_iso
from projections.repairs import queue_stats as repair_queue
from services.infrastructure import dead_letters
from services.infrastructure.database import ReadModelDB
from services.infrastructure.log_following import read_positions

QUEUES = ("provisioning", "repair", "billing_enforcement", "notifications")


def _age(oldest: str | None, now: datetime) -> float | None:
    if not oldest:
        return None
    started = parse_iso(oldest)
    return round(max((now - started).total_seconds(), 0.0), 3)


def queue_stats(db: ReadModelDB, head: int, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or datetime.now(UTC)
    positions = read_positions(db)
    ops = db.query("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM rm_operations WHERE phase = 'queued'")[0]
    deliveries = db.query("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM rm_deliveries "
                          "WHERE status IN ('pending', 'attempting', 'retrying')")[0]
    repairs = repair_queue(db)
    items = [
        {"name": "provisioning", "pending": int(ops["n"]), "oldest_pending_age_seconds": _age(ops["oldest"], now),
         "lag": max(head - positions.get("provisioning", 0), 0)},
        {"name": "repair", "pending": repairs["pending"], "oldest_pending_age_seconds": _age(repairs["oldest"], now),
         "lag": max(head - positions.get("repair", 0), 0)},
        _billing_queue(db, now, max(head - positions.get("billing_enforcement", 0), 0)),
        {"name": "notifications", "pending": int(deliveries["n"]),
         "oldest_pending_age_seconds": _age(deliveries["oldest"], now),
         "lag": max(head - positions.get("notifications", 0), 0)},
    ]
    letters = dead_letters.unresolved(db)
    for item in items:
        follower = item["name"]
        item["dead_letters"] = [d for d in letters if d["follower"] == follower]
    return items


def _billing_queue(db: ReadModelDB, now: datetime, lag: int) -> dict[str, Any]:
    """Accounts whose next enforcement step is due (or whose payment is not yet applied), and the oldest."""
    from projections.billing import due

    rows = due(db, now)
    oldest = min((r["next_step_at"] for r in rows if r["next_step_at"]), default=None)
    return {"name": "billing_enforcement", "pending": len(rows), "oldest_pending_age_seconds": _age(oldest, now),
            "lag": lag}


def operation_stats(db: ReadModelDB, now: datetime | None = None) -> dict[str, Any]:
    """Operations by kind and phase, and the age of the oldest queued and running ones."""
    now = now or datetime.now(UTC)
    by_kind = db.query("SELECT kind, phase, COUNT(*) AS n FROM rm_operations GROUP BY kind, phase")
    oldest = {r["phase"]: _age(r["oldest"], now) for r in db.query(
        "SELECT phase, MIN(updated_at) AS oldest FROM rm_operations WHERE phase IN ('queued', 'running') "
        "GROUP BY phase")}
    return {"by_kind_phase": by_kind, "oldest_age": oldest}
