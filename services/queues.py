"""Queue staleness: for each process manager, what is pending, for how long, and how far behind the log it is.

The same figures feed `GET /api/admin/queues` and the Prometheus gauges.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from projections.db import ReadModelDB
from projections.runner import read_positions

QUEUES = ("provisioning", "repair", "billing_enforcement", "notifications")


def _age(oldest: str | None, now: datetime) -> float | None:
    if not oldest:
        return None
    started = datetime.strptime(oldest, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return round(max((now - started).total_seconds(), 0.0), 3)


def queue_stats(db: ReadModelDB, head: int, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or datetime.now(UTC)
    positions = read_positions(db)
    ops = db.query("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM rm_operations WHERE phase = 'queued'")[0]
    deliveries = db.query("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM rm_deliveries "
                          "WHERE status IN ('pending', 'attempting', 'retrying')")[0]
    items = [
        {"name": "provisioning", "pending": int(ops["n"]), "oldest_pending_age_seconds": _age(ops["oldest"], now),
         "lag": max(head - positions.get("provisioning", 0), 0)},
        # The repair worker and billing enforcement arrive with their issues: nothing can be pending yet.
        {"name": "repair", "pending": 0, "oldest_pending_age_seconds": None, "lag": 0},
        {"name": "billing_enforcement", "pending": 0, "oldest_pending_age_seconds": None, "lag": 0},
        {"name": "notifications", "pending": int(deliveries["n"]),
         "oldest_pending_age_seconds": _age(deliveries["oldest"], now),
         "lag": max(head - positions.get("notifications", 0), 0)},
    ]
    return items


def operation_stats(db: ReadModelDB, now: datetime | None = None) -> dict[str, Any]:
    """Operations by kind and phase, and the age of the oldest queued and running ones."""
    now = now or datetime.now(UTC)
    by_kind = db.query("SELECT kind, phase, COUNT(*) AS n FROM rm_operations GROUP BY kind, phase")
    oldest = {r["phase"]: _age(r["oldest"], now) for r in db.query(
        "SELECT phase, MIN(updated_at) AS oldest FROM rm_operations WHERE phase IN ('queued', 'running') "
        "GROUP BY phase")}
    return {"by_kind_phase": by_kind, "oldest_age": oldest}
