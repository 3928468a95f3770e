"""`InstancesProjection`: the portal's list of instances per owner, with the pending operation.

Reads instance events for the row and operation events for the pending
operation's phase and current step, so a card can show `queued`, `running
(start_process)` and so on without a second query.
"""

from __future__ import annotations

from typing import Any

from domain.instance import Instance
from domain.operation import Operation
from projections.base import After, Cursor, Database, Projection, Table, iso, newest_first

TABLE = "rm_instances"
NO_PENDING = "pending_operation_id = NULL, pending_kind = NULL, pending_phase = NULL, pending_step = NULL"


class InstancesProjection(Projection):
    name = "instances"
    tables = (
        Table(
            TABLE,
            "id TEXT PRIMARY KEY, owner_id TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, "
            "template TEXT NOT NULL, edge_name TEXT NOT NULL, status TEXT NOT NULL, address TEXT, "
            "port INTEGER, pending_operation_id TEXT, pending_kind TEXT, pending_phase TEXT, "
            "pending_step TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, version BIGINT NOT NULL",
            indexes=(("owner_created", "owner_id, created_at"), ("pending_op", "pending_operation_id")),
        ),
    )
    topics = frozenset(
        {
            Instance.Requested.TOPIC,
            Instance.OperationBegun.TOPIC,
            Instance.Provisioned.TOPIC,
            Instance.OperationFailed.TOPIC,
            Instance.Started.TOPIC,
            Instance.Stopped.TOPIC,
            Instance.OperationCompleted.TOPIC,
            Instance.DeletionRequested.TOPIC,
            Instance.Deleted.TOPIC,
            Instance.Suspended.TOPIC,
            Instance.Unsuspended.TOPIC,
            Instance.Renamed.TOPIC,
            Operation.Claimed.TOPIC,
            Operation.StepStarted.TOPIC,
            Instance.Placed.TOPIC,
        }
    )

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        table = t[TABLE]
        at = iso(event.timestamp)
        if isinstance(event, Instance.Requested):
            cur.execute(
                f"INSERT INTO {table} (id, owner_id, kind, name, template, edge_name, status, "
                "pending_operation_id, pending_kind, pending_phase, created_at, updated_at, version) "
                "VALUES (%s, %s, %s, %s, %s, %s, 'provisioning', %s, 'create', 'queued', %s, %s, %s)",
                (
                    str(event.originator_id), str(event.owner_id), event.kind, event.name, event.template,
                    event.edge_name, str(event.operation_id), at, at, event.originator_version,
                ),
            )
        elif isinstance(event, Instance.OperationBegun):
            self._update(cur, table, event, "pending_operation_id = %s, pending_kind = %s, "
                         "pending_phase = 'queued', pending_step = NULL", (str(event.operation_id), event.kind))
        elif isinstance(event, Instance.Provisioned):
            self._update(cur, table, event, "status = 'running', address = %s, port = %s, "
                         "pending_operation_id = NULL, pending_kind = NULL, pending_phase = NULL, "
                         "pending_step = NULL", (event.address, event.port))
        elif isinstance(event, Instance.Placed):
            if event.address is not None:  # a move: the server answers at its new node's address
                self._update(cur, table, event, "address = %s, port = %s", (event.address, event.port))
            else:
                self._update(cur, table, event, "port = port", ())  # the version moves on
        elif isinstance(event, Instance.OperationFailed):
            status = "status = 'failed', " if event.kind == "create" else \
                "status = 'stopped', " if getattr(event, "process_stopped", False) else ""
            self._update(cur, table, event, f"{status}{NO_PENDING}", ())
        elif isinstance(event, Instance.Started | Instance.Stopped | Instance.OperationCompleted | Instance.Deleted):
            status = {Instance.Started: "status = 'running', ",
                      Instance.Stopped: "status = CASE WHEN status = 'suspended' THEN 'suspended' ELSE 'stopped' END, ",
                      Instance.Deleted: "status = 'deleted', address = NULL, "}.get(type(event), "")
            self._update(cur, table, event, f"{status}{NO_PENDING}", ())
        elif isinstance(event, Instance.Suspended | Instance.Unsuspended):
            status = "suspended" if isinstance(event, Instance.Suspended) else event.status
            if event.operation_id is None:
                self._update(cur, table, event, "status = %s", (status,))
            else:
                kind = "stop" if isinstance(event, Instance.Suspended) else "start"
                self._update(cur, table, event, "status = %s, pending_operation_id = %s, pending_kind = %s, "
                             "pending_phase = 'queued', pending_step = NULL", (status, str(event.operation_id), kind))
        elif isinstance(event, Instance.DeletionRequested):
            self._update(cur, table, event, "status = 'deleting', pending_operation_id = %s, pending_kind = 'delete', "
                         "pending_phase = 'queued', pending_step = NULL", (str(event.operation_id),))
        elif isinstance(event, Instance.Renamed):
            self._update(cur, table, event, "name = %s", (event.name,))
        elif isinstance(event, Operation.Claimed):
            cur.execute(f"UPDATE {table} SET pending_phase = 'running' WHERE pending_operation_id = %s",
                        (str(event.originator_id),))
        elif isinstance(event, Operation.StepStarted):
            cur.execute(f"UPDATE {table} SET pending_step = %s WHERE pending_operation_id = %s",
                        (event.step, str(event.originator_id)))

    @staticmethod
    def _update(cur: Cursor, table: str, event: Any, assignments: str, params: tuple) -> None:
        cur.execute(
            f"UPDATE {table} SET {assignments}, updated_at = %s, version = %s WHERE id = %s",
            (*params, iso(event.timestamp), event.originator_version, str(event.originator_id)),
        )


def _row(r: dict[str, Any]) -> dict[str, Any]:
    pending = None
    if r["pending_operation_id"]:
        pending = {"id": r["pending_operation_id"], "kind": r["pending_kind"], "phase": r["pending_phase"],
                   "step": r["pending_step"]}
    return {
        "id": r["id"], "owner_id": r["owner_id"], "kind": r["kind"], "name": r["name"],
        "template": r["template"], "edge_name": r["edge_name"], "status": r["status"],
        "address": r["address"], "port": r["port"], "pending_operation_id": r["pending_operation_id"],
        "pending_operation": pending, "created_at": r["created_at"], "updated_at": r["updated_at"],
    }


def list_for_owner(db: Database, owner_id: str, limit: int = 10_000, after: After = None) -> list[dict[str, Any]]:
    """The owner's instances, newest first, pending ones included; deleted ones are left out. A page of them:
    `after` is the previous page's last (created_at, id)."""
    return [_row(r) for r in newest_first(db, TABLE, "owner_id = %s AND status <> 'deleted'", [owner_id], limit, after)]


def get(db: Database, instance_id: str) -> dict[str, Any] | None:
    rows = db.query(f"SELECT * FROM {TABLE} WHERE id = %s", (instance_id,))
    return _row(rows[0]) if rows else None


def list_all(db: Database) -> list[dict[str, Any]]:
    return [_row(r) for r in db.query(f"SELECT * FROM {TABLE} ORDER BY id")]


def list_running(db: Database) -> list[dict[str, Any]]:
    """`{"id", "kind", "owner_id"}` of every running instance (the per-instance metrics' labels)."""
    return db.query(f"SELECT id, kind, owner_id FROM {TABLE} WHERE status = 'running' ORDER BY id")
