"""`OperationsProjection`: the pollable state of every operation."""

from __future__ import annotations

from typing import Any

from domain.operation import Operation
from projections.base import Cursor, Database, Projection, Table, iso

TABLE = "rm_operations"


class OperationsProjection(Projection):
    name = "operations"
    tables = (
        Table(
            TABLE,
            "id TEXT PRIMARY KEY, kind TEXT NOT NULL, instance_id TEXT NOT NULL, owner_id TEXT NOT NULL, "
            "phase TEXT NOT NULL, step TEXT, worker_id TEXT, error_code TEXT, error_message TEXT, "
            "error_step TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, version BIGINT NOT NULL",
            indexes=(("instance", "instance_id"), ("phase_created", "phase, created_at")),
        ),
    )
    topics = frozenset(
        {
            Operation.Requested.TOPIC,
            Operation.Claimed.TOPIC,
            Operation.StepStarted.TOPIC,
            Operation.StepSucceeded.TOPIC,
            Operation.Succeeded.TOPIC,
            Operation.Failed.TOPIC,
        }
    )

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        table = t[TABLE]
        if isinstance(event, Operation.Requested):
            at = iso(event.timestamp)
            cur.execute(
                f"INSERT INTO {table} (id, kind, instance_id, owner_id, phase, created_at, updated_at, version) "
                "VALUES (%s, %s, %s, %s, 'queued', %s, %s, %s)",
                (str(event.originator_id), event.kind, str(event.instance_id), str(event.owner_id), at, at,
                 event.originator_version),
            )
            return
        if isinstance(event, Operation.Claimed):
            assignments, params = "phase = 'running', worker_id = %s", (event.worker_id,)
        elif isinstance(event, (Operation.StepStarted, Operation.StepSucceeded)):
            assignments, params = "step = %s", (event.step,)
        elif isinstance(event, Operation.Succeeded):
            assignments, params = "phase = 'succeeded'", ()
        elif isinstance(event, Operation.Failed):
            assignments = "phase = 'failed', error_code = %s, error_message = %s, error_step = %s"
            params = (event.code, event.message, event.step)
        else:
            return
        cur.execute(
            f"UPDATE {table} SET {assignments}, updated_at = %s, version = %s WHERE id = %s",
            (*params, iso(event.timestamp), event.originator_version, str(event.originator_id)),
        )


def _row(r: dict[str, Any]) -> dict[str, Any]:
    error = {"code": r["error_code"], "message": r["error_message"]} if r["error_code"] else None
    return {
        "id": r["id"], "kind": r["kind"], "instance_id": r["instance_id"], "owner_id": r["owner_id"],
        "phase": r["phase"], "step": r["step"], "error": error, "created_at": r["created_at"],
        "updated_at": r["updated_at"],
    }


def get(db: Database, operation_id: str) -> dict[str, Any] | None:
    rows = db.query(f"SELECT * FROM {TABLE} WHERE id = %s", (operation_id,))
    return _row(rows[0]) if rows else None


def list_all(db: Database) -> list[dict[str, Any]]:
    return [_row(r) for r in db.query(f"SELECT * FROM {TABLE} ORDER BY id")]


def for_instance(db: Database, instance_id: str, limit: int = 10) -> list[dict[str, Any]]:
    """An instance's last operations, newest first (with their errors)."""
    rows = db.query(f"SELECT * FROM {TABLE} WHERE instance_id = %s ORDER BY created_at DESC, id LIMIT %s",
                    (instance_id, limit))
    return [_row(r) | {"step": r["step"], "error_step": r["error_step"]} for r in rows]
