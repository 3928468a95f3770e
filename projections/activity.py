"""`ActivityProjection`: who did what and when on each server, newest first, from the streams that say so.

Reads operations (power, backups, restores, create, delete: asked by whom, and how they ended),
the instance's activity stream (console commands, file writes), schedules (created, changed,
deleted) and their runs (one item per run, its status kept current), subusers (added, their
permissions changed, removed), billing suspensions of the instance, and users (for the actor's
email). Each item's `id` is the event's (stream and version), so one event makes at most one item
and a rebuild from position 0 gives the same rows. Items are listed by keyset pages on (`at`, `id`),
on the index `(instance_id, at, id)`.

Actors: `user` (a person: the owner, a subuser, an operator), `schedule` (a schedule of the owner's ran it;
the id and email are the owner's) or `system` (billing; id and email null).
"""

from __future__ import annotations

import json
from typing import Any

from domain.activity import InstanceActivity
from domain.instance import Instance
from domain.operation import Operation
from domain.schedule import Schedule, ScheduleRun
from domain.subuser import Subuser
from domain.user import User
from projections.base import Cursor, Database, Projection, Table, iso

ITEMS = "rm_activity"
ACTORS = "rm_activity_actors"
SCHEDULES = "rm_activity_schedules"

#: The action an operation of each kind is listed as (kinds added later: `operation.KIND`).
OPERATION_ACTIONS = {"create": "instance.create", "delete": "instance.delete", "start": "power.start",
                     "stop": "power.stop", "restart": "power.restart", "backup": "backup.create",
                     "restore": "backup.restore", "delete_backup": "backup.delete", "move": "instance.move"}


def _origin(event: Any) -> str | None:
    origin = getattr(event, "origin", None)
    if origin is None and event.request_key.startswith("billing:"):
        return "billing"  # billing's stops and starts, recorded before operations carried their origin
    return origin


class ActivityProjection(Projection):
    name = "activity"
    tables = (
        Table(ITEMS, "id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, at TEXT NOT NULL, actor_id TEXT, "
                     "actor_kind TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL, ref TEXT",
              indexes=(("instance_at", "instance_id, at, id"), ("ref", "ref"))),
        Table(ACTORS, "id TEXT PRIMARY KEY, email TEXT NOT NULL"),
        Table(SCHEDULES, "id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, name TEXT NOT NULL"),
    )
    topics = frozenset({
        User.Registered.TOPIC, Operation.Requested.TOPIC, Operation.Succeeded.TOPIC, Operation.Failed.TOPIC,
        Instance.Suspended.TOPIC, Instance.Unsuspended.TOPIC, Instance.Renamed.TOPIC,
        InstanceActivity.ConsoleCommandSent.TOPIC, InstanceActivity.FileWritten.TOPIC,
        InstanceActivity.DirectoryMade.TOPIC, InstanceActivity.EntryRemoved.TOPIC, InstanceActivity.EntryMoved.TOPIC,
        Schedule.Defined.TOPIC, Schedule.Revised.TOPIC, Schedule.Deleted.TOPIC,
        ScheduleRun.Planned.TOPIC, ScheduleRun.Missed.TOPIC, ScheduleRun.Skipped.TOPIC, ScheduleRun.Started.TOPIC,
        ScheduleRun.Finished.TOPIC,
        Subuser.Added.TOPIC, Subuser.Readded.TOPIC, Subuser.PermissionsChanged.TOPIC, Subuser.Removed.TOPIC,
    })

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        items, oid = t[ITEMS], str(event.originator_id)

        def add(instance_id: Any, actor_id: Any, kind: str, action: str, detail: dict[str, Any],
                ref: str | None = None) -> None:
            cur.execute(f"INSERT INTO {items} (id, instance_id, at, actor_id, actor_kind, action, detail, ref) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        (f"{oid}:{event.originator_version}", str(instance_id), iso(event.timestamp),
                         str(actor_id) if actor_id else None, kind, action, json.dumps(detail), ref))

        if isinstance(event, User.Registered):
            cur.execute(f"INSERT INTO {t[ACTORS]} (id, email) VALUES (%s, %s)", (oid, event.email))
        elif isinstance(event, Operation.Requested):
            origin = _origin(event)
            detail: dict[str, Any] = {"operation_id": oid, "status": "queued"}
            if event.kind == "restore" and "backup_id" in event.params:
                detail["backup_id"] = event.params["backup_id"]
            if event.kind == "delete":
                detail["keep_backups"] = bool(event.params.get("keep_backups", True))
            if origin is not None:
                detail["origin"] = origin
            if origin == "billing":
                add(event.instance_id, None, "system", OPERATION_ACTIONS.get(event.kind, f"operation.{event.kind}"),
                    detail, oid)
                return
            kind = "schedule" if origin and origin.startswith("schedule_run:") else "user"
            actor = getattr(event, "actor_id", None) or event.owner_id
            add(event.instance_id, actor, kind, OPERATION_ACTIONS.get(event.kind, f"operation.{event.kind}"),
                detail, oid)
        elif isinstance(event, Operation.Succeeded | Operation.Failed):
            error = {"code": event.code, "message": event.message} if isinstance(event, Operation.Failed) else None
            pruned = event.result.get("pruned") if isinstance(event, Operation.Succeeded) else None  # retention
            self._update(cur, items, oid, status="succeeded" if error is None else "failed", error=error,
                         pruned=pruned or None)
        elif isinstance(event, Instance.Suspended | Instance.Unsuspended):
            verb = "suspend" if isinstance(event, Instance.Suspended) else "unsuspend"
            area = "billing" if event.reason == "billing" else "instance"
            add(oid, None, "system", f"{area}.{verb}", {"reason": event.reason})
        elif isinstance(event, Instance.Renamed):
            add(oid, event.actor_id, "user", "instance.rename", {"name": event.name, "previous": event.previous})
        elif isinstance(event, InstanceActivity.ConsoleCommandSent):
            add(event.instance_id, event.actor_id, "user", "console.command", {"command": event.command})
        elif isinstance(event, InstanceActivity.FileWritten):
            add(event.instance_id, event.actor_id, "user", "file.write", {"path": event.path, "size": event.size})
        elif isinstance(event, InstanceActivity.DirectoryMade):
            add(event.instance_id, event.actor_id, "user", "file.mkdir", {"path": event.path, "via": event.via})
        elif isinstance(event, InstanceActivity.EntryRemoved):
            add(event.instance_id, event.actor_id, "user", "file.remove",
                {"path": event.path, "directory": event.directory, "via": event.via})
        elif isinstance(event, InstanceActivity.EntryMoved):
            add(event.instance_id, event.actor_id, "user", "file.rename",
                {"path": event.path, "target": event.target, "via": event.via})
        elif isinstance(event, Schedule.Defined):
            cur.execute(f"INSERT INTO {t[SCHEDULES]} (id, instance_id, name) VALUES (%s, %s, %s)",
                        (oid, str(event.instance_id), event.name))
            add(event.instance_id, event.actor_id or event.owner_id, "user", "schedule.create",
                {"schedule_id": oid, "name": event.name, "cron": event.cron, "timezone": event.timezone,
                 "enabled": event.enabled})
        elif isinstance(event, Schedule.Revised | Schedule.Deleted):
            row = cur.execute(f"SELECT instance_id, name FROM {t[SCHEDULES]} WHERE id = %s", (oid,)).fetchone()
            if row is None:
                return
            if isinstance(event, Schedule.Revised):
                cur.execute(f"UPDATE {t[SCHEDULES]} SET name = %s WHERE id = %s", (event.name, oid))
                add(row["instance_id"], event.actor_id, "user", "schedule.update",
                    {"schedule_id": oid, "name": event.name, "changed": list(event.changed),
                     "enabled": event.enabled})
            else:
                add(row["instance_id"], event.actor_id, "user" if event.actor_id else "system", "schedule.delete",
                    {"schedule_id": oid, "name": row["name"], "reason": event.reason})
        elif isinstance(event, ScheduleRun.Planned):
            kind = "user" if event.actor_id else "schedule"
            add(event.instance_id, event.actor_id or event.owner_id, kind, "schedule.run",
                {"schedule_id": str(event.schedule_id), "name": event.schedule_name, "run_id": oid,
                 "trigger": event.trigger, "due_at": iso(event.due_at), "status": "pending"}, oid)
        elif isinstance(event, ScheduleRun.Started):
            self._update(cur, items, oid, status="running")
        elif isinstance(event, ScheduleRun.Missed):
            self._update(cur, items, oid, status="missed", missed_count=event.count)
        elif isinstance(event, ScheduleRun.Skipped):
            self._update(cur, items, oid, status="skipped", reason={"code": event.code, "message": event.message})
        elif isinstance(event, ScheduleRun.Finished):
            self._update(cur, items, oid, status=event.status)
        elif isinstance(event, Subuser.Added | Subuser.Readded):
            add(event.instance_id, event.actor_id, "user", "subuser.add",
                {"user_id": str(event.user_id), "email": event.email, "permissions": list(event.permissions)})
        elif isinstance(event, Subuser.PermissionsChanged):
            add(event.instance_id, event.actor_id, "user", "subuser.update",
                {"user_id": str(event.user_id), "email": event.email, "permissions": list(event.permissions),
                 "previous": list(event.previous)})
        elif isinstance(event, Subuser.Removed):
            add(event.instance_id, event.actor_id, "user", "subuser.remove",
                {"user_id": str(event.user_id), "email": event.email})

    @staticmethod
    def _update(cur: Cursor, items: str, ref: str, **changes: Any) -> None:
        patch = {k: v for k, v in changes.items() if v is not None}
        if cur.dialect == "postgres":  # merged in the database: no read, so a rebuild's pipeline never waits here
            cur.execute(f"UPDATE {items} SET detail = (detail::jsonb || %s::jsonb)::text WHERE ref = %s",
                        (json.dumps(patch), ref))
            return
        for row in cur.execute(f"SELECT id, detail FROM {items} WHERE ref = %s", (ref,)).fetchall():
            detail = json.loads(row["detail"]) | {k: v for k, v in changes.items() if v is not None}
            cur.execute(f"UPDATE {items} SET detail = %s WHERE id = %s", (json.dumps(detail), row["id"]))


def _item(r: dict[str, Any]) -> dict[str, Any]:
    return {"id": r["id"], "at": r["at"],
            "actor": {"id": r["actor_id"], "email": r["email"], "kind": r["actor_kind"]},
            "action": r["action"], "detail": json.loads(r["detail"])}


def list_for_instance(db: Database, instance_id: str, limit: int = 100,
                      after: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """The instance's activity, newest first; `after` is the (at, id) of the previous page's last item."""
    where, params = "a.instance_id = %s", [instance_id]
    if after is not None:
        where += " AND (a.at < %s OR (a.at = %s AND a.id < %s))"
        params += [after[0], after[0], after[1]]
    rows = db.query(f"SELECT a.*, u.email FROM {ITEMS} a LEFT JOIN {ACTORS} u ON u.id = a.actor_id "
                    f"WHERE {where} ORDER BY a.at DESC, a.id DESC LIMIT %s", (*params, limit))
    return [_item(r) for r in rows]


def list_all(db: Database) -> list[dict[str, Any]]:
    return db.query(f"SELECT * FROM {ITEMS} ORDER BY id")
