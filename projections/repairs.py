"""`RepairsProjection`: every repair and the current drift findings per target."""

from __future__ import annotations

import json
from typing import Any

from domain.repair import Drift, Repair
from projections.base import After, Cursor, Database, Projection, Table, iso, newest_first

REPAIRS = "rm_repairs"
DRIFT = "rm_drift"

_STATUS = {
    Repair.Queued: "queued",
    Repair.Skipped: "skipped",
    Repair.Started: "running",
    Repair.Succeeded: "succeeded",
    Repair.Failed: "failed",
    Repair.Escalated: "escalated",
}


class RepairsProjection(Projection):
    name = "repairs"
    tables = (
        Table(
            REPAIRS,
            "id TEXT PRIMARY KEY, kind TEXT NOT NULL, level INTEGER NOT NULL, target TEXT NOT NULL, "
            "instance_id TEXT, status TEXT NOT NULL, mode TEXT NOT NULL, epoch BIGINT NOT NULL, "
            "reason TEXT, error_code TEXT, error_message TEXT, findings TEXT NOT NULL, "
            "created_at TEXT NOT NULL, updated_at TEXT NOT NULL, queued_at TEXT",
            indexes=(("status_created", "status, created_at"), ("target", "target")),
        ),
        Table(DRIFT, "target TEXT PRIMARY KEY, findings TEXT NOT NULL, epoch BIGINT NOT NULL, "
                     "updated_at TEXT NOT NULL"),
    )
    topics = frozenset({Repair.Proposed.TOPIC, *(cls.TOPIC for cls in _STATUS), Drift.FindingsChanged.TOPIC})

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        at = iso(event.timestamp)
        if isinstance(event, Drift.FindingsChanged):
            cur.execute(
                f"INSERT INTO {t[DRIFT]} (target, findings, epoch, updated_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (target) DO UPDATE SET findings = excluded.findings, epoch = excluded.epoch, "
                "updated_at = excluded.updated_at",
                (event.target, json.dumps(event.findings), event.epoch, at),
            )
            return
        table = t[REPAIRS]
        if isinstance(event, Repair.Proposed):
            cur.execute(
                f"INSERT INTO {table} (id, kind, level, target, instance_id, status, mode, epoch, findings, "
                "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, 'proposed', %s, %s, %s, %s, %s)",
                (str(event.originator_id), event.kind, event.level, event.target,
                 str(event.instance_id) if event.instance_id else None, event.mode, event.epoch,
                 json.dumps(event.findings), at, at),
            )
            return
        status = _STATUS.get(type(event))
        if status is None:
            return
        reason = getattr(event, "reason", None)
        code, message = getattr(event, "code", None), getattr(event, "message", None)
        cur.execute(
            f"UPDATE {table} SET status = %s, updated_at = %s, reason = COALESCE(%s, reason), "
            "error_code = COALESCE(%s, error_code), error_message = COALESCE(%s, error_message), "
            "queued_at = CASE WHEN %s = 'queued' THEN %s ELSE queued_at END WHERE id = %s",
            (status, at, reason, code, message, status, at, str(event.originator_id)),
        )


def _row(r: dict[str, Any]) -> dict[str, Any]:
    error = {"code": r["error_code"], "message": r["error_message"]} if r["error_code"] else None
    return {
        "id": r["id"], "kind": r["kind"], "level": int(r["level"]), "target": r["target"],
        "instance_id": r["instance_id"], "status": r["status"], "mode": r["mode"], "epoch": int(r["epoch"]),
        "reason": r["reason"], "error": error, "findings": json.loads(r["findings"]),
        "created_at": r["created_at"], "updated_at": r["updated_at"],
    }


def list_repairs(db: Database, status: str | None = None, limit: int = 500, after: After = None
                 ) -> list[dict[str, Any]]:
    """Newest first, a page at a time."""
    where, params = ("status = %s", [status]) if status else ("", [])
    return [_row(r) for r in newest_first(db, REPAIRS, where, params, limit, after)]


def get(db: Database, repair_id: str) -> dict[str, Any] | None:
    rows = db.query(f"SELECT * FROM {REPAIRS} WHERE id = %s", (repair_id,))
    return _row(rows[0]) if rows else None


def drifting_targets(db: Database) -> list[str]:
    """Targets whose last recorded findings are not empty."""
    return [r["target"] for r in db.query(f"SELECT target FROM {DRIFT} WHERE findings <> '[]'")]


def current_drift(db: Database) -> list[dict[str, Any]]:
    rows = db.query(f"SELECT * FROM {DRIFT} WHERE findings <> '[]' ORDER BY target")
    return [{"target": r["target"], "findings": json.loads(r["findings"]), "epoch": int(r["epoch"]),
             "updated_at": r["updated_at"]} for r in rows]


def queue_stats(db: Database) -> dict[str, Any]:
    row = db.query(f"SELECT COUNT(*) AS n, MIN(queued_at) AS oldest FROM {REPAIRS} WHERE status = 'queued'")[0]
    return {"pending": int(row["n"]), "oldest": row["oldest"]}


def counts(db: Database) -> list[dict[str, Any]]:
    return db.query(f"SELECT kind, status, COUNT(*) AS n FROM {REPAIRS} GROUP BY kind, status")


def for_target(db: Database, target: str, instance_id: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The repairs of one target (or of one instance, whatever their target), newest first."""
    rows = db.query(f"SELECT * FROM {REPAIRS} WHERE target = %s OR instance_id = %s "
                    "ORDER BY created_at DESC, id LIMIT %s", (target, instance_id or target, limit))
    return [_row(r) for r in rows]


def drift_of(db: Database, target: str) -> dict[str, Any] | None:
    rows = db.query(f"SELECT * FROM {DRIFT} WHERE target = %s", (target,))
    if not rows:
        return None
    r = rows[0]
    return {"target": r["target"], "findings": json.loads(r["findings"]), "epoch": int(r["epoch"]),
            "updated_at": r["updated_at"]}


def since(db: Database, since_iso: str) -> list[dict[str, Any]]:
    """Every repair proposed at or after `since_iso`, oldest first (the soak report's input)."""
    rows = db.query(f"SELECT * FROM {REPAIRS} WHERE created_at >= %s ORDER BY created_at, id", (since_iso,))
    return [_row(r) for r in rows]


def drift_changes_since(db: Database, since_iso: str) -> list[dict[str, Any]]:
    """Targets whose findings changed at or after `since_iso` (the last change each)."""
    rows = db.query(f"SELECT * FROM {DRIFT} WHERE updated_at >= %s ORDER BY target", (since_iso,))
    return [{"target": r["target"], "findings": json.loads(r["findings"]), "updated_at": r["updated_at"]}
            for r in rows]
