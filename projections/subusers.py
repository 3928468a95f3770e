"""`SubusersProjection`: who is on which server with which permissions, for the lists.

One row per membership that is not removed (removing deletes the row; re-adding inserts it again).
It answers a server's subusers for its owner, and a user's servers with their permissions: the
instances list joins it to `rm_instances` (`list_for_member`). Access checks themselves read the
membership's stream (services/server_access.py), never this table, so a removal holds at once.
"""

from __future__ import annotations

import json
from typing import Any

from domain.subuser import PERMISSIONS, Subuser
from projections.base import After, Cursor, Database, Projection, Table, iso, newest_first
from projections.instances import TABLE as INSTANCES
from projections.instances import _row as instance_row

TABLE = "rm_subusers"


class SubusersProjection(Projection):
    name = "subusers"
    tables = (
        Table(TABLE, "id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, user_id TEXT NOT NULL, email TEXT NOT NULL, "
                     "permissions TEXT NOT NULL, added_by TEXT NOT NULL, created_at TEXT NOT NULL, "
                     "updated_at TEXT NOT NULL",
              indexes=(("instance", "instance_id, created_at, id"), ("user", "user_id, instance_id"))),
    )
    topics = frozenset({Subuser.Added.TOPIC, Subuser.Readded.TOPIC, Subuser.PermissionsChanged.TOPIC,
                        Subuser.Removed.TOPIC})

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        table, oid, at = t[TABLE], str(event.originator_id), iso(event.timestamp)
        if isinstance(event, Subuser.Added | Subuser.Readded):
            cur.execute(f"DELETE FROM {table} WHERE id = %s", (oid,))
            cur.execute(f"INSERT INTO {table} (id, instance_id, user_id, email, permissions, added_by, created_at, "
                        "updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        (oid, str(event.instance_id), str(event.user_id), event.email, json.dumps(event.permissions),
                         str(event.actor_id), at, at))
        elif isinstance(event, Subuser.PermissionsChanged):
            cur.execute(f"UPDATE {table} SET permissions = %s, updated_at = %s WHERE id = %s",
                        (json.dumps(event.permissions), at, oid))
        elif isinstance(event, Subuser.Removed):
            cur.execute(f"DELETE FROM {table} WHERE id = %s", (oid,))


def _member(r: dict[str, Any]) -> dict[str, Any]:
    return {"user_id": r["user_id"], "email": r["email"], "permissions": json.loads(r["permissions"]),
            "created_at": r["created_at"], "updated_at": r["updated_at"]}


def list_for_instance(db: Database, instance_id: str, limit: int = 100, after: After = None) -> list[dict[str, Any]]:
    """The server's subusers, newest first; `after` is the previous page's last (created_at, id)."""
    rows = newest_first(db, TABLE, "instance_id = %s", [instance_id], limit, after)
    return [_member(r) | {"_id": r["id"]} for r in rows]


def get(db: Database, instance_id: str, user_id: str) -> dict[str, Any] | None:
    rows = db.query(f"SELECT * FROM {TABLE} WHERE instance_id = %s AND user_id = %s", (instance_id, user_id))
    return _member(rows[0]) if rows else None


def list_for_member(db: Database, user_id: str, limit: int = 100, after: After = None) -> list[dict[str, Any]]:
    """The servers `user_id` owns or is a subuser of, newest first, deleted ones left out; each with the
    caller's `role` (`owner` or `subuser`) and `permissions` (every one for the owner)."""
    source = f"{INSTANCES} i LEFT JOIN {TABLE} s ON s.instance_id = i.id AND s.user_id = %s"
    rows = newest_first(db, source, "(i.owner_id = %s OR s.user_id IS NOT NULL) AND i.status <> 'deleted'",
                        [user_id, user_id], limit, after, columns="i.*, s.permissions AS member_permissions",
                        prefix="i.")
    out = []
    for r in rows:
        owned = r["owner_id"] == user_id
        out.append(instance_row(r) | {"role": "owner" if owned else "subuser",
                                      "permissions": list(PERMISSIONS) if owned
                                      else json.loads(r["member_permissions"])})
    return out
