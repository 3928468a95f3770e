"""`SchedulesProjection`: each schedule with its next due time and last run, and every run with its tasks.

Reads the `Schedule` and `ScheduleRun` streams only. Every time here (`next_run_at`, a run's
`next_step_at`) is carried by the events, so a rebuild from position 0 gives the same rows. The
schedules worker's durable timers read it: `due` (schedules whose next due time has come) and
`active_runs` (runs with something to do). The API lists from it, newest first, by keyset pages.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from domain.schedule import Schedule, ScheduleRun
from projections.base import Cursor, Database, Projection, Table, iso

SCHEDULES = "rm_schedules"
RUNS = "rm_schedule_runs"


def _iso(ts: datetime | None) -> str | None:
    return iso(ts) if ts is not None else None


def _stored_tasks(tasks: list[dict[str, Any]]) -> str:
    return json.dumps([{"action": t["action"], "payload": t.get("payload"), "delay_seconds": t["delay_seconds"],
                        "continue_on_failure": bool(t.get("continue_on_failure", False))} for t in tasks])


class SchedulesProjection(Projection):
    name = "schedules"
    tables = (
        Table(
            SCHEDULES,
            "id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, owner_id TEXT NOT NULL, name TEXT NOT NULL, "
            "cron TEXT NOT NULL, timezone TEXT NOT NULL, only_when_running INTEGER NOT NULL, "
            "enabled INTEGER NOT NULL, deleted INTEGER NOT NULL, tasks TEXT NOT NULL, next_run_at TEXT, "
            "last_run_id TEXT, last_run_status TEXT, last_run_due_at TEXT, last_run_finished_at TEXT, "
            "created_at TEXT NOT NULL, updated_at TEXT NOT NULL",
            indexes=(("instance", "instance_id, created_at, id"), ("next_run", "next_run_at")),
        ),
        Table(
            RUNS,
            "id TEXT PRIMARY KEY, schedule_id TEXT NOT NULL, instance_id TEXT NOT NULL, owner_id TEXT NOT NULL, "
            "schedule_name TEXT NOT NULL, trigger TEXT NOT NULL, actor_id TEXT, due_at TEXT NOT NULL, "
            "planned_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, status TEXT NOT NULL, reason_code TEXT, "
            "reason_message TEXT, missed_from TEXT, missed_through TEXT, missed_count INTEGER, tasks TEXT NOT NULL, "
            "next_step_at TEXT, waiting_operation_id TEXT",
            indexes=(("schedule", "schedule_id, due_at, id"), ("active", "status, next_step_at"),
                     ("waiting", "waiting_operation_id")),
        ),
    )
    topics = frozenset({
        Schedule.Defined.TOPIC, Schedule.Revised.TOPIC, Schedule.TimerAdvanced.TOPIC, Schedule.Deleted.TOPIC,
        ScheduleRun.Planned.TOPIC, ScheduleRun.Missed.TOPIC, ScheduleRun.Skipped.TOPIC, ScheduleRun.Started.TOPIC,
        ScheduleRun.TaskStarted.TOPIC, ScheduleRun.TaskSucceeded.TOPIC, ScheduleRun.TaskFailed.TOPIC,
        ScheduleRun.Finished.TOPIC,
    })

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        schedules, runs, sid, at = t[SCHEDULES], t[RUNS], str(event.originator_id), iso(event.timestamp)
        if isinstance(event, Schedule.Defined):
            cur.execute(
                f"INSERT INTO {schedules} (id, instance_id, owner_id, name, cron, timezone, only_when_running, "
                "enabled, deleted, tasks, next_run_at, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s)",
                (sid, str(event.instance_id), str(event.owner_id), event.name, event.cron, event.timezone,
                 int(event.only_when_running), int(event.enabled), _stored_tasks(event.tasks),
                 _iso(event.next_run_at), at, at))
        elif isinstance(event, Schedule.Revised):
            cur.execute(
                f"UPDATE {schedules} SET name = %s, cron = %s, timezone = %s, only_when_running = %s, enabled = %s, "
                "tasks = %s, next_run_at = %s, updated_at = %s WHERE id = %s",
                (event.name, event.cron, event.timezone, int(event.only_when_running), int(event.enabled),
                 _stored_tasks(event.tasks), _iso(event.next_run_at), at, sid))
        elif isinstance(event, Schedule.TimerAdvanced):
            cur.execute(f"UPDATE {schedules} SET next_run_at = %s WHERE id = %s", (_iso(event.next_run_at), sid))
        elif isinstance(event, Schedule.Deleted):
            cur.execute(f"UPDATE {schedules} SET deleted = 1, enabled = 0, next_run_at = NULL, updated_at = %s "
                        "WHERE id = %s", (at, sid))
        elif isinstance(event, ScheduleRun.Planned):
            tasks = [{"index": i, **json.loads(_stored_tasks([task]))[0], "status": "pending", "started_at": None,
                      "finished_at": None, "operation_id": None, "error": None}
                     for i, task in enumerate(event.tasks)]
            cur.execute(
                f"INSERT INTO {runs} (id, schedule_id, instance_id, owner_id, schedule_name, trigger, actor_id, "
                "due_at, planned_at, status, tasks, next_step_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending', %s, %s)",
                (sid, str(event.schedule_id), str(event.instance_id), str(event.owner_id), event.schedule_name,
                 event.trigger, str(event.actor_id) if event.actor_id else None, iso(event.due_at),
                 iso(event.planned_at), json.dumps(tasks), iso(event.planned_at)))
            cur.execute(
                f"UPDATE {schedules} SET last_run_id = %s, last_run_status = 'pending', last_run_due_at = %s, "
                "last_run_finished_at = NULL WHERE id = %s AND (last_run_due_at IS NULL OR last_run_due_at <= %s)",
                (sid, iso(event.due_at), str(event.schedule_id), iso(event.due_at)))
        else:
            self._run_changed(cur, schedules, runs, sid, event)

    def _run_changed(self, cur: Cursor, schedules: str, runs: str, rid: str, event: Any) -> None:
        row = cur.execute(f"SELECT schedule_id, tasks FROM {runs} WHERE id = %s", (rid,)).fetchone()
        if row is None:
            return
        tasks = json.loads(row["tasks"])
        sets: dict[str, Any] = {}
        if isinstance(event, ScheduleRun.Missed | ScheduleRun.Skipped | ScheduleRun.Finished):
            for task in tasks:
                if task["status"] == "pending":
                    task["status"] = "not_run"
            sets |= {"finished_at": iso(event.at), "next_step_at": None, "waiting_operation_id": None,
                     "tasks": json.dumps(tasks)}
            if isinstance(event, ScheduleRun.Missed):
                sets |= {"status": "missed", "reason_code": "missed", "missed_from": iso(event.missed_from),
                         "missed_through": iso(event.missed_through), "missed_count": event.count,
                         "reason_message": f"{event.count} due time{'s' if event.count != 1 else ''} passed while "
                                           "no schedules worker was running, beyond the grace window"}
            elif isinstance(event, ScheduleRun.Skipped):
                sets |= {"status": "skipped", "reason_code": event.code, "reason_message": event.message}
            else:
                failed = next((task for task in tasks if task["status"] == "failed"), None)
                sets |= {"status": event.status, "reason_code": failed["error"]["code"] if failed else None,
                         "reason_message": failed["error"]["message"] if failed else None}
            cur.execute(f"UPDATE {schedules} SET last_run_status = %s, last_run_finished_at = %s "
                        "WHERE id = %s AND last_run_id = %s",
                        (sets["status"], iso(event.at), row["schedule_id"], rid))
        elif isinstance(event, ScheduleRun.Started):
            sets |= {"status": "running", "started_at": iso(event.at), "next_step_at": iso(event.next_step_at)}
            cur.execute(f"UPDATE {schedules} SET last_run_status = 'running' WHERE id = %s AND last_run_id = %s",
                        (row["schedule_id"], rid))
        else:
            task = tasks[event.index]
            if isinstance(event, ScheduleRun.TaskStarted):
                task |= {"status": "running", "started_at": iso(event.at),
                         "operation_id": str(event.operation_id) if event.operation_id else None}
                sets["waiting_operation_id"] = task["operation_id"]
            elif isinstance(event, ScheduleRun.TaskSucceeded):
                task |= {"status": "succeeded", "finished_at": iso(event.at)}
                sets["waiting_operation_id"] = None
            elif isinstance(event, ScheduleRun.TaskFailed):
                task |= {"status": "failed", "finished_at": iso(event.at),
                         "error": {"code": event.code, "message": event.message}}
                sets["waiting_operation_id"] = None
            sets |= {"tasks": json.dumps(tasks), "next_step_at": iso(event.next_step_at)}
        assignments = ", ".join(f"{column} = %s" for column in sets)
        cur.execute(f"UPDATE {runs} SET {assignments} WHERE id = %s", (*sets.values(), rid))


# Reads.


def _schedule(r: dict[str, Any]) -> dict[str, Any]:
    last = None
    if r["last_run_id"]:
        last = {"id": r["last_run_id"], "status": r["last_run_status"], "due_at": r["last_run_due_at"],
                "finished_at": r["last_run_finished_at"]}
    return {"id": r["id"], "instance_id": r["instance_id"], "owner_id": r["owner_id"], "name": r["name"],
            "cron": r["cron"], "timezone": r["timezone"], "only_when_running": bool(r["only_when_running"]),
            "enabled": bool(r["enabled"]), "tasks": json.loads(r["tasks"]), "next_run_at": r["next_run_at"],
            "last_run": last, "created_at": r["created_at"], "updated_at": r["updated_at"]}


def _run(r: dict[str, Any]) -> dict[str, Any]:
    reason = {"code": r["reason_code"], "message": r["reason_message"]} if r["reason_code"] else None
    missed = None
    if r["missed_count"] is not None:
        missed = {"from": r["missed_from"], "through": r["missed_through"], "count": int(r["missed_count"])}
    return {"id": r["id"], "schedule_id": r["schedule_id"], "instance_id": r["instance_id"],
            "schedule_name": r["schedule_name"], "trigger": r["trigger"], "actor_id": r["actor_id"],
            "due_at": r["due_at"], "planned_at": r["planned_at"], "started_at": r["started_at"],
            "finished_at": r["finished_at"], "status": r["status"], "reason": reason, "missed": missed,
            "tasks": json.loads(r["tasks"])}


def get(db: Database, schedule_id: str) -> dict[str, Any] | None:
    rows = db.query(f"SELECT * FROM {SCHEDULES} WHERE id = %s AND deleted = 0", (schedule_id,))
    return _schedule(rows[0]) if rows else None


def list_for_instance(db: Database, instance_id: str, limit: int = 500,
                      after: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """The instance's schedules (not deleted), newest first; `after` is the (created_at, id) of the previous page's
    last item."""
    where, params = "instance_id = %s AND deleted = 0", [instance_id]
    if after is not None:
        where += " AND (created_at < %s OR (created_at = %s AND id < %s))"
        params += [after[0], after[0], after[1]]
    rows = db.query(f"SELECT * FROM {SCHEDULES} WHERE {where} ORDER BY created_at DESC, id DESC LIMIT %s",
                    (*params, limit))
    return [_schedule(r) for r in rows]


def get_run(db: Database, run_id: str) -> dict[str, Any] | None:
    rows = db.query(f"SELECT * FROM {RUNS} WHERE id = %s", (run_id,))
    return _run(rows[0]) if rows else None


def list_runs(db: Database, schedule_id: str, limit: int = 100,
              after: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """A schedule's runs, newest due time first; `after` is the (due_at, id) of the previous page's last item."""
    where, params = "schedule_id = %s", [schedule_id]
    if after is not None:
        where += " AND (due_at < %s OR (due_at = %s AND id < %s))"
        params += [after[0], after[0], after[1]]
    rows = db.query(f"SELECT * FROM {RUNS} WHERE {where} ORDER BY due_at DESC, id DESC LIMIT %s", (*params, limit))
    return [_run(r) for r in rows]


def due(db: Database, now: datetime) -> list[dict[str, Any]]:
    """Schedules whose next due time has come (the timer's work), oldest due first."""
    return db.query(f"SELECT id, instance_id, next_run_at FROM {SCHEDULES} WHERE deleted = 0 AND enabled = 1 "
                    "AND next_run_at IS NOT NULL AND next_run_at <= %s ORDER BY next_run_at", (iso(now),))


def active_runs(db: Database, now: datetime, waiting: bool) -> list[dict[str, Any]]:
    """Runs with something to do now (`next_step_at` has come); with `waiting`, also every run that waits for an
    operation to finish."""
    condition = "next_step_at <= %s" + (" OR waiting_operation_id IS NOT NULL" if waiting else "")
    return db.query(f"SELECT id, planned_at FROM {RUNS} WHERE status IN ('pending', 'running') AND ({condition}) "
                    "ORDER BY planned_at", (iso(now),))


def for_instance_ids(db: Database, instance_id: str) -> list[str]:
    """Every live schedule of an instance (for deleting them with it)."""
    return [r["id"] for r in db.query(f"SELECT id FROM {SCHEDULES} WHERE instance_id = %s AND deleted = 0",
                                      (instance_id,))]


def queue_stats(db: Database, now: datetime) -> dict[str, Any]:
    """For the operators' queues: the work the schedules worker owes now (schedules whose due time has come, runs
    whose next step is due; not runs waiting out a delay or an operation), and the oldest such time."""
    schedules = db.query(f"SELECT COUNT(*) AS n, MIN(next_run_at) AS oldest FROM {SCHEDULES} WHERE deleted = 0 "
                         "AND enabled = 1 AND next_run_at IS NOT NULL AND next_run_at <= %s", (iso(now),))[0]
    runs = db.query(f"SELECT COUNT(*) AS n, MIN(next_step_at) AS oldest FROM {RUNS} WHERE status IN "
                    "('pending', 'running') AND waiting_operation_id IS NULL AND next_step_at <= %s", (iso(now),))[0]
    oldest = min((o for o in (schedules["oldest"], runs["oldest"]) if o), default=None)
    return {"pending": int(schedules["n"]) + int(runs["n"]), "oldest": oldest}


def list_all(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Both tables, in a stable order (rebuild checks)."""
    return {"schedules": db.query(f"SELECT * FROM {SCHEDULES} ORDER BY id"),
            "runs": db.query(f"SELECT * FROM {RUNS} ORDER BY id")}
