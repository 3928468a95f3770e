"""`BackupsProjection`: each instance's backups with status, size and checksum, and each customer's."""

from __future__ import annotations

from typing import Any

from domain.backup import Backup
from projections.base import After, Cursor, Database, Projection, Table, iso, newest_first

TABLE = "rm_backups"


class BackupsProjection(Projection):
    name = "backups"
    version = 3  # 2: deletions (`deleting`, back after a failed one), and each customer's backups by owner;
    # 3: where each archive is (`location`: local or s3), and retention's pruning
    tables = (
        Table(
            TABLE,
            "id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, owner_id TEXT NOT NULL, operation_id TEXT NOT NULL, "
            "status TEXT NOT NULL, size BIGINT, sha256 TEXT, error_code TEXT, created_at TEXT NOT NULL, "
            "completed_at TEXT, updated_at TEXT NOT NULL, location TEXT NOT NULL DEFAULT 'local', pruned_by TEXT",
            indexes=(("instance_created", "instance_id, created_at"), ("owner_created", "owner_id, created_at")),
        ),
    )
    topics = frozenset({Backup.Requested.TOPIC, Backup.Completed.TOPIC, Backup.Failed.TOPIC, Backup.Deleted.TOPIC,
                        Backup.DeletionRequested.TOPIC, Backup.DeletionFailed.TOPIC, Backup.StoredOffsite.TOPIC,
                        Backup.Pruned.TOPIC})

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        table, at, bid = t[TABLE], iso(event.timestamp), str(event.originator_id)
        if isinstance(event, Backup.Requested):
            cur.execute(
                f"INSERT INTO {table} (id, instance_id, owner_id, operation_id, status, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, 'pending', %s, %s)",
                (bid, str(event.instance_id), str(event.owner_id), str(event.operation_id), at, at),
            )
        elif isinstance(event, Backup.Completed):
            cur.execute(f"UPDATE {table} SET status = 'completed', size = %s, sha256 = %s, completed_at = %s, "
                        "updated_at = %s WHERE id = %s", (event.size, event.sha256, event.archived_at, at, bid))
        elif isinstance(event, Backup.Failed):
            cur.execute(f"UPDATE {table} SET status = 'failed', error_code = %s, updated_at = %s WHERE id = %s",
                        (event.code, at, bid))
        elif isinstance(event, Backup.Deleted):
            cur.execute(f"UPDATE {table} SET status = 'deleted', updated_at = %s WHERE id = %s", (at, bid))
        elif isinstance(event, Backup.DeletionRequested):
            cur.execute(f"UPDATE {table} SET status = 'deleting', updated_at = %s WHERE id = %s", (at, bid))
        elif isinstance(event, Backup.StoredOffsite):
            cur.execute(f"UPDATE {table} SET location = %s, updated_at = %s WHERE id = %s", (event.location, at, bid))
        elif isinstance(event, Backup.Pruned):
            cur.execute(f"UPDATE {table} SET status = 'deleted', pruned_by = %s, updated_at = %s WHERE id = %s",
                        (str(event.operation_id), at, bid))
        elif isinstance(event, Backup.DeletionFailed):
            cur.execute(f"UPDATE {table} SET status = %s, updated_at = %s WHERE id = %s", (event.status, at, bid))


def _row(r: dict[str, Any]) -> dict[str, Any]:
    return {"id": r["id"], "instance_id": r["instance_id"], "owner_id": r["owner_id"], "status": r["status"],
            "size": r["size"], "sha256": r["sha256"], "created_at": r["created_at"],
            "completed_at": r["completed_at"], "location": r["location"], "operation_id": r["operation_id"]}


def list_for_instance(db: Database, instance_id: str, limit: int = 10_000, after: After = None,
                      include_deleted: bool = True) -> list[dict[str, Any]]:
    """An instance's backups, newest first (a page of them: `after` the previous page's last (created_at, id))."""
    where = "instance_id = %s" + ("" if include_deleted else " AND status <> 'deleted'")
    return [_row(r) for r in newest_first(db, TABLE, where, [instance_id], limit, after)]


def list_for_owner(db: Database, owner_id: str, limit: int, after: tuple[str, str] | None = None
                   ) -> list[dict[str, Any]]:
    """A customer's backups that are not deleted (those of deleted servers too), newest first; `after`:
    the (created_at, id) of the previous page's last item."""
    return [_row(r) for r in newest_first(db, TABLE, "owner_id = %s AND status <> 'deleted'", [owner_id], limit, after)]


def get(db: Database, backup_id: str) -> dict[str, Any] | None:
    rows = db.query(f"SELECT * FROM {TABLE} WHERE id = %s", (backup_id,))
    return _row(rows[0]) if rows else None
