"""Schedules: cron expressions with a timezone, each a chain of tasks; and their runs.

A `Schedule` belongs to one instance. Its stream is the durable timer: `TimerAdvanced` records
that every due time up to `through` has been handled (run, or recorded as missed), and names the
`ScheduleRun` records it made. Two workers (or one restarted) that see the same due time both try
to append at the same version and to create the run with the same id (`run_id_for`: uuid5 of the
schedule and the due time): the store lets exactly one save win, so a due time is never run twice.

Due times are computed by `cronsim` (a pure evaluator of cron expressions, the one third-party
import of the domain besides `eventsourcing`: it does no I/O and reads no clock) in the schedule's
IANA timezone (`zoneinfo`), with Debian cron's rules at DST changes: a time that does not exist
(02:30 on the night clocks go forward) fires at the first minute that does (03:00); a time that
happens twice (01:30 on the night they go back) fires once, the first time; an expression with a
wildcard hour or minute (`*/15 * * * *`) fires at every matching instant, both passes included.

A `ScheduleRun` is one run: planned (by the timer, or "run now"), then `skipped` (the account is
suspended, the server is not running under `only_when_running`, the previous run is still
active, the server is gone), `missed` (its due time passed beyond the grace window while no
worker was up), or started: its tasks one after the other, each after its `delay_seconds`,
each bracketed by `TaskStarted` (the intent, with the operation id a power or backup task will
use) and `TaskSucceeded` / `TaskFailed`; then `Finished` (`succeeded` or `failed`). Times are
given to the commands (`now`), never read here; the time at which the worker should look at a
run again (`next_step_at`) is computed by the commands and carried in the events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError, IllegalTransitionError
from domain.ids import derive
from domain.text import TextValidationError, text_problem

ACTIONS = ("command", "power", "backup")
POWER_ACTIONS = ("start", "stop", "restart")
MAX_TASKS = 10
MAX_DELAY_SECONDS = 900
MAX_NAME = 100
MAX_COMMAND = 1000
MAX_CRON = 100
MAX_TIMEZONE = 64
#: A task whose start is recorded but whose outcome is not, this long after it started, was interrupted
#: (its worker died): it is failed as `interrupted` and never repeated.
TASK_LEASE = timedelta(seconds=120)
#: At most this many missed due times are counted one by one; beyond it the count says "at least".
MISSED_COUNT_CAP = 10_000

MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
          "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_SPACE = re.compile(r"\s+")


class ScheduleDeletedError(DomainError):
    """The schedule was deleted (by its owner, or with its server)."""

    code = "not_found"


# Rules: what a cron expression, a timezone and a task list may be.


def normalize_cron(expr: str) -> str:
    """`expr` with its fields separated by one space; `TextValidationError` (field `cron`) if it is not a valid
    five-field cron expression (minute hour day-of-month month day-of-week, names and `L`, `#`, `W` allowed) or a
    macro (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`)."""
    if not isinstance(expr, str):
        raise TextValidationError("cron", "must be a string")
    text = _SPACE.sub(" ", expr.strip())
    if not text or len(text) > MAX_CRON or text_problem(text) is not None:
        raise TextValidationError("cron", f"must be a cron expression of at most {MAX_CRON} characters, "
                                          "e.g. `0 4 * * *`")
    expanded = MACROS.get(text.lower(), text)
    if len(expanded.split(" ")) != 5:
        raise TextValidationError("cron", f"{text!r} is not a cron expression: it needs five fields (minute hour "
                                          "day-of-month month day-of-week), e.g. `0 4 * * *`")
    try:
        next(CronSim(expanded, datetime(2000, 1, 1, tzinfo=UTC)))
    except CronSimError as exc:
        raise TextValidationError("cron", f"{text!r} is not a valid cron expression: {exc}") from None
    except StopIteration:
        raise TextValidationError("cron", f"{text!r} never matches a date") from None
    return text


def zone(name: str) -> ZoneInfo:
    """The IANA timezone `name` (`UTC`, `Europe/Berlin`); `TextValidationError` (field `timezone`) if unknown."""
    if not isinstance(name, str) or not name or len(name) > MAX_TIMEZONE or text_problem(name) is not None:
        raise TextValidationError("timezone", "must be an IANA timezone name such as UTC or Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TextValidationError("timezone", f"{name!r} is not a known IANA timezone (e.g. UTC, "
                                              "Europe/Berlin, America/New_York)") from None


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise TextValidationError("name", f"must be 1-{MAX_NAME} characters")
    problem = text_problem(name)
    if problem is not None:
        raise TextValidationError("name", problem)
    return name


def check_tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The task list in its stored shape; `TextValidationError` naming the task and field otherwise.

    Each task: `action` (command | power | backup), `payload` (the console line; start | stop | restart;
    null for a backup), `delay_seconds` (0-900, the wait before it: after the run begins for the first,
    after the previous task ended for the others), `continue_on_failure` (false: a failure ends the run).
    """
    if not isinstance(tasks, list) or not 1 <= len(tasks) <= MAX_TASKS:
        raise TextValidationError("tasks", f"must be a list of 1-{MAX_TASKS} tasks")
    checked = []
    for i, task in enumerate(tasks):
        where = f"tasks.{i}"
        if not isinstance(task, dict):
            raise TextValidationError(where, "must be an object")
        action, payload = task.get("action"), task.get("payload")
        delay, go_on = task.get("delay_seconds", 0), task.get("continue_on_failure", False)
        if action not in ACTIONS:
            raise TextValidationError(f"{where}.action", f"must be one of {', '.join(ACTIONS)}")
        if type(delay) is not int or not 0 <= delay <= MAX_DELAY_SECONDS:
            raise TextValidationError(f"{where}.delay_seconds", f"must be a whole number of seconds, "
                                                                f"0-{MAX_DELAY_SECONDS}")
        if type(go_on) is not bool:
            raise TextValidationError(f"{where}.continue_on_failure", "must be true or false")
        if action == "power" and payload not in POWER_ACTIONS:
            raise TextValidationError(f"{where}.payload", f"a power task's payload is one of "
                                                          f"{', '.join(POWER_ACTIONS)}")
        if action == "backup" and payload not in (None, ""):
            raise TextValidationError(f"{where}.payload", "a backup task takes no payload (null)")
        if action == "command":
            if not isinstance(payload, str) or not payload.strip() or len(payload) > MAX_COMMAND:
                raise TextValidationError(f"{where}.payload", f"a command task's payload is the console line "
                                                              f"to send, 1-{MAX_COMMAND} characters")
            problem = text_problem(payload)
            if problem is not None or any(c in payload for c in "\t\r\n"):
                raise TextValidationError(f"{where}.payload", problem or "a console line must not contain a tab "
                                                                         "or a line break")
        checked.append({"action": action, "payload": payload if action != "backup" else None,
                        "delay_seconds": delay, "continue_on_failure": go_on})
    return checked


# Due times.


def _expanded(cron: str) -> str:
    return MACROS.get(cron.lower(), cron)


def next_due(cron: str, timezone: str, after: datetime) -> datetime | None:
    """The first due time strictly after `after` (aware), in UTC; None if none within 50 years."""
    tz = zone(timezone)
    iterator = CronSim(_expanded(cron), after.astimezone(tz))
    for _ in range(100):  # a repeated local time (DST ending) can yield an instant before `after`: skip it
        try:
            candidate = next(iterator).astimezone(UTC)
        except StopIteration:
            return None
        if candidate > after:
            return candidate
    return None


def due_times(cron: str, timezone: str, after: datetime, until: datetime, cap: int) -> list[datetime]:
    """The due times in (`after`, `until`], oldest first, at most `cap` of them."""
    found: list[datetime] = []
    current = after
    while len(found) < cap:
        nxt = next_due(cron, timezone, current)
        if nxt is None or nxt > until:
            break
        found.append(nxt)
        current = nxt
    return found


@dataclass(frozen=True)
class Plan:
    """What the timer does now: run `run_at` (the latest due time within the grace window), record the
    due times before it as missed, and move past `through`; `next_run_at` is the next due time after now."""

    run_at: datetime | None
    missed_from: datetime | None
    missed_through: datetime | None
    missed_count: int
    through: datetime
    next_run_at: datetime | None


def plan_due(cron: str, timezone: str, cursor: datetime, now: datetime, grace: timedelta) -> Plan | None:
    """The timer's decision for the due times in (`cursor`, `now`]; None when none is due. Pure.

    Only the latest due time may run, and only if it is at most `grace` old: a worker that was down
    runs a missed run once at start-up when it is within the window, and records every other due
    time it slept through as missed (one record, with the count).
    """
    found = due_times(cron, timezone, cursor, now, MISSED_COUNT_CAP + 1)
    if not found:
        return None
    if len(found) > MISSED_COUNT_CAP:  # far behind: find the latest due time near now, count "at least"
        recent = due_times(cron, timezone, max(found[-1], now - timedelta(days=1)), now, 2 * MISSED_COUNT_CAP)
        found = [found[0], *(recent or found[-1:])]
        count = MISSED_COUNT_CAP
    else:
        count = len(found)
    latest = found[-1]
    runs = now - latest <= grace
    missed = count - 1 if runs else count
    missed_through = (found[-2] if len(found) > 1 else None) if runs else latest
    return Plan(run_at=latest if runs else None, missed_from=found[0] if missed else None,
                missed_through=missed_through if missed else None, missed_count=missed, through=latest,
                next_run_at=next_due(cron, timezone, now))


def run_id_for(schedule_id: UUID, due_at: datetime) -> UUID:
    """The one run a due time may have (or the missed record that starts at it)."""
    return derive("schedule-run", schedule_id, due_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def manual_run_id(schedule_id: UUID, actor_id: UUID, key: str) -> UUID:
    """The run an Idempotency-Key of "run now" makes: one per (schedule, caller, key)."""
    return derive("schedule-run", schedule_id, "manual", actor_id, key)


def operation_key(run_id: UUID, index: int) -> str:
    """The Idempotency-Key of the operation a power or backup task requests: asking twice finds the same one."""
    return f"schedule-run:{run_id}:{index}"


# Aggregates.


class Schedule(Aggregate):
    TOPIC = "zlh.Schedule"

    class Event(Aggregate.Event):
        TOPIC = "zlh.Schedule.Event"

    class Defined(Event, Aggregate.Created):
        TOPIC = "zlh.Schedule.Defined"
        instance_id: UUID
        owner_id: UUID
        name: str
        cron: str
        timezone: str
        only_when_running: bool
        enabled: bool
        tasks: list[dict[str, Any]]
        anchor: datetime
        next_run_at: datetime | None
        actor_id: UUID | None

    class Revised(Event):
        """The owner changed it; `changed` names the fields. A new cron, timezone or a resume moves the anchor:
        due times before it are not missed, they were never planned."""

        TOPIC = "zlh.Schedule.Revised"
        name: str
        cron: str
        timezone: str
        only_when_running: bool
        enabled: bool
        tasks: list[dict[str, Any]]
        anchor: datetime
        next_run_at: datetime | None
        changed: list[str]
        actor_id: UUID | None

    class TimerAdvanced(Event):
        """Every due time up to `through` is handled: `run_id` runs the latest, `missed_run_id` records the rest."""

        TOPIC = "zlh.Schedule.TimerAdvanced"
        through: datetime
        next_run_at: datetime | None
        run_id: UUID | None
        missed_run_id: UUID | None

    class Deleted(Event):
        """Deleted by `actor_id`, or (`reason` `instance_deleted`, no actor) with its server."""

        TOPIC = "zlh.Schedule.Deleted"
        actor_id: UUID | None
        reason: str

    @classmethod
    def define(cls, instance_id: UUID, owner_id: UUID, name: str, cron: str, timezone: str,
               only_when_running: bool, enabled: bool, tasks: list[dict[str, Any]], now: datetime,
               actor_id: UUID | None) -> Schedule:
        """A new schedule, once every field is valid; its first due time is after `now`."""
        name, cron, tasks = check_name(name), normalize_cron(cron), check_tasks(tasks)
        zone(timezone)
        next_run_at = next_due(cron, timezone, now) if enabled else None
        return cls(instance_id=instance_id, owner_id=owner_id, name=name, cron=cron, timezone=timezone,
                   only_when_running=bool(only_when_running), enabled=bool(enabled), tasks=tasks, anchor=now,
                   next_run_at=next_run_at, actor_id=actor_id)

    @event(Defined)
    def __init__(self, instance_id: UUID, owner_id: UUID, name: str, cron: str, timezone: str,
                 only_when_running: bool, enabled: bool, tasks: list[dict[str, Any]], anchor: datetime,
                 next_run_at: datetime | None, actor_id: UUID | None) -> None:
        self.instance_id, self.owner_id = instance_id, owner_id
        self.name, self.cron, self.timezone = name, cron, timezone
        self.only_when_running, self.enabled = only_when_running, enabled
        self.tasks = tasks
        self.anchor = anchor
        self.next_run_at = next_run_at
        self.through: datetime | None = None
        self.last_run_id: UUID | None = None
        self.deleted = False

    @property
    def cursor(self) -> datetime:
        """Due times after this have not been handled yet."""
        return max(self.anchor, self.through) if self.through is not None else self.anchor

    # Commands.

    def revise(self, now: datetime, actor_id: UUID | None, **changes: Any) -> bool:
        """Apply the given fields (name, cron, timezone, only_when_running, enabled, tasks); False if none changed."""
        self._check_live()
        unknown = set(changes) - {"name", "cron", "timezone", "only_when_running", "enabled", "tasks"}
        if unknown:
            raise TextValidationError(sorted(unknown)[0], "is not a field of a schedule")
        new = {"name": self.name, "cron": self.cron, "timezone": self.timezone,
               "only_when_running": self.only_when_running, "enabled": self.enabled, "tasks": self.tasks}
        if "name" in changes:
            new["name"] = check_name(changes["name"])
        if "cron" in changes:
            new["cron"] = normalize_cron(changes["cron"])
        if "timezone" in changes:
            zone(changes["timezone"])
            new["timezone"] = changes["timezone"]
        if "tasks" in changes:
            new["tasks"] = check_tasks(changes["tasks"])
        for flag in ("only_when_running", "enabled"):
            if flag in changes:
                if type(changes[flag]) is not bool:
                    raise TextValidationError(flag, "must be true or false")
                new[flag] = changes[flag]
        old = {"name": self.name, "cron": self.cron, "timezone": self.timezone,
               "only_when_running": self.only_when_running, "enabled": self.enabled, "tasks": self.tasks}
        changed = [k for k in new if new[k] != old[k]]
        if not changed:
            return False
        timing = {"cron", "timezone"} & set(changed) or (new["enabled"] and not self.enabled)
        anchor = max(now, self.cursor) if timing else self.anchor
        cursor = max(anchor, self.through) if self.through is not None else anchor
        # The first due time not handled yet: unchanged by an edit that does not touch the timing (it may be
        # due already, if no worker has handled it), after `now` for one that does.
        next_run_at = next_due(new["cron"], new["timezone"], cursor) if new["enabled"] else None
        self._revised(**new, anchor=anchor, next_run_at=next_run_at, changed=changed, actor_id=actor_id)
        return True

    def plan(self, now: datetime, grace: timedelta) -> Plan | None:
        """What the timer should do now (None: nothing is due, or the schedule is paused or deleted)."""
        if self.deleted or not self.enabled:
            return None
        return plan_due(self.cron, self.timezone, self.cursor, now, grace)

    def advance(self, plan: Plan, run_id: UUID | None, missed_run_id: UUID | None) -> None:
        self._check_live()
        if plan.through <= self.cursor:
            raise IllegalTransitionError("the timer has already moved past this due time")
        self._timer_advanced(through=plan.through, next_run_at=plan.next_run_at, run_id=run_id,
                             missed_run_id=missed_run_id)

    def delete(self, actor_id: UUID | None, reason: str) -> bool:
        if self.deleted:
            return False
        self._deleted(actor_id=actor_id, reason=reason)
        return True

    def _check_live(self) -> None:
        if self.deleted:
            raise ScheduleDeletedError("no such schedule")

    # Events.

    @event(Revised)
    def _revised(self, name: str, cron: str, timezone: str, only_when_running: bool, enabled: bool,
                 tasks: list[dict[str, Any]], anchor: datetime, next_run_at: datetime | None, changed: list[str],
                 actor_id: UUID | None) -> None:
        self.name, self.cron, self.timezone = name, cron, timezone
        self.only_when_running, self.enabled, self.tasks = only_when_running, enabled, tasks
        self.anchor, self.next_run_at = anchor, next_run_at

    @event(TimerAdvanced)
    def _timer_advanced(self, through: datetime, next_run_at: datetime | None, run_id: UUID | None,
                        missed_run_id: UUID | None) -> None:
        self.through, self.next_run_at = through, next_run_at
        if run_id is not None:
            self.last_run_id = run_id

    @event(Deleted)
    def _deleted(self, actor_id: UUID | None, reason: str) -> None:
        self.deleted = True
        self.enabled = False
        self.next_run_at = None


FINAL_RUN = ("succeeded", "failed", "skipped", "missed")
FINAL_TASK = ("succeeded", "failed", "not_run")


@dataclass(frozen=True)
class Step:
    """What a worker should do next for a run: `start`, `task` (start task `index`), `await_operation`
    (task `index` waits for its operation), `interrupted` (task `index` outlived its lease with no
    outcome), `finish`, `wait` (until `until`), or `done`."""

    kind: str
    index: int | None = None
    until: datetime | None = None


class ScheduleRun(Aggregate):
    TOPIC = "zlh.ScheduleRun"

    class Event(Aggregate.Event):
        TOPIC = "zlh.ScheduleRun.Event"

    class Planned(Event, Aggregate.Created):
        """`trigger` is `schedule` (a due time) or `manual` (run now, by `actor_id`); `tasks` is the list then."""

        TOPIC = "zlh.ScheduleRun.Planned"
        schedule_id: UUID
        instance_id: UUID
        owner_id: UUID
        schedule_name: str
        trigger: str
        due_at: datetime
        tasks: list[dict[str, Any]]
        only_when_running: bool
        actor_id: UUID | None
        planned_at: datetime

    class Missed(Event):
        TOPIC = "zlh.ScheduleRun.Missed"
        missed_from: datetime
        missed_through: datetime
        count: int
        at: datetime

    class Skipped(Event):
        TOPIC = "zlh.ScheduleRun.Skipped"
        code: str
        message: str
        at: datetime

    class Started(Event):
        TOPIC = "zlh.ScheduleRun.Started"
        at: datetime
        next_step_at: datetime

    class TaskStarted(Event):
        """The intent: task `index` begins; a power or backup task names the operation it will request."""

        TOPIC = "zlh.ScheduleRun.TaskStarted"
        index: int
        at: datetime
        operation_id: UUID | None
        next_step_at: datetime

    class TaskSucceeded(Event):
        TOPIC = "zlh.ScheduleRun.TaskSucceeded"
        index: int
        at: datetime
        detail: dict[str, Any]
        next_step_at: datetime

    class TaskFailed(Event):
        TOPIC = "zlh.ScheduleRun.TaskFailed"
        index: int
        at: datetime
        code: str
        message: str
        next_step_at: datetime

    class Finished(Event):
        TOPIC = "zlh.ScheduleRun.Finished"
        status: str
        at: datetime

    @classmethod
    def plan(cls, run_id: UUID, schedule: Schedule, trigger: str, due_at: datetime, now: datetime,
             actor_id: UUID | None = None) -> ScheduleRun:
        return cls._create(cls.Planned, id=run_id, schedule_id=schedule.id, instance_id=schedule.instance_id,
                           owner_id=schedule.owner_id, schedule_name=schedule.name, trigger=trigger, due_at=due_at,
                           tasks=list(schedule.tasks), only_when_running=schedule.only_when_running,
                           actor_id=actor_id, planned_at=now)

    @event(Planned)
    def __init__(self, schedule_id: UUID, instance_id: UUID, owner_id: UUID, schedule_name: str, trigger: str,
                 due_at: datetime, tasks: list[dict[str, Any]], only_when_running: bool, actor_id: UUID | None,
                 planned_at: datetime) -> None:
        self.schedule_id, self.instance_id, self.owner_id = schedule_id, instance_id, owner_id
        self.schedule_name, self.trigger, self.due_at = schedule_name, trigger, due_at
        self.only_when_running, self.actor_id, self.planned_at = only_when_running, actor_id, planned_at
        self.tasks = [{**t, "status": "pending", "started_at": None, "finished_at": None, "operation_id": None,
                       "error": None, "detail": None} for t in tasks]
        self.status = "pending"
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.next_step_at: datetime | None = planned_at
        self.reason: dict[str, str] | None = None
        self.missed: dict[str, Any] | None = None

    @property
    def is_active(self) -> bool:
        return self.status not in FINAL_RUN

    def _stopping(self) -> bool:
        return any(t["status"] == "failed" and not t["continue_on_failure"] for t in self.tasks)

    def _next_pending(self) -> int | None:
        if self._stopping():
            return None
        return next((i for i, t in enumerate(self.tasks) if t["status"] == "pending"), None)

    def next_step(self, now: datetime, lease: timedelta = TASK_LEASE) -> Step:
        """What to do next (pure)."""
        if self.status == "pending":
            return Step("start")
        if not self.is_active:
            return Step("done")
        running = next((i for i, t in enumerate(self.tasks) if t["status"] == "running"), None)
        if running is not None:
            task = self.tasks[running]
            if task["operation_id"] is not None and task["action"] != "command":
                return Step("await_operation", running)
            if now >= task["started_at"] + lease:
                return Step("interrupted", running)
            return Step("wait", running, task["started_at"] + lease)
        index = self._next_pending()
        if index is None:
            return Step("finish")
        if self.next_step_at is not None and now < self.next_step_at:
            return Step("wait", index, self.next_step_at)
        return Step("task", index)

    def _delay_before(self, index: int | None, now: datetime) -> datetime:
        return now if index is None else now + timedelta(seconds=self.tasks[index]["delay_seconds"])

    # Commands.

    def miss(self, missed_from: datetime, missed_through: datetime, count: int, now: datetime) -> None:
        self._check_status("pending")
        self._missed(missed_from=missed_from, missed_through=missed_through, count=count, at=now)

    def skip(self, code: str, message: str, now: datetime) -> None:
        self._check_status("pending")
        self._skipped(code=code, message=message, at=now)

    def start(self, now: datetime) -> None:
        self._check_status("pending")
        self._started(at=now, next_step_at=self._delay_before(0, now))

    def start_task(self, index: int, now: datetime, operation_id: UUID | None, lease: timedelta = TASK_LEASE) -> None:
        self._check_status("running")
        if self.tasks[index]["status"] != "pending" or self._next_pending() != index:
            raise IllegalTransitionError(f"task {index} is not the next task")
        self._task_started(index=index, at=now, operation_id=operation_id, next_step_at=now + lease)

    def succeed_task(self, index: int, now: datetime, detail: dict[str, Any]) -> None:
        self._check_running_task(index)
        after = [i for i in range(index + 1, len(self.tasks)) if self.tasks[i]["status"] == "pending"]
        self._task_succeeded(index=index, at=now, detail=detail,
                             next_step_at=self._delay_before(after[0] if after else None, now))

    def fail_task(self, index: int, now: datetime, code: str, message: str) -> None:
        self._check_running_task(index)
        after = [i for i in range(index + 1, len(self.tasks)) if self.tasks[i]["status"] == "pending"]
        go_on = self.tasks[index]["continue_on_failure"] and after
        self._task_failed(index=index, at=now, code=code, message=message[:1000],
                          next_step_at=self._delay_before(after[0] if go_on else None, now))

    def finish(self, now: datetime) -> None:
        self._check_status("running")
        if any(t["status"] == "running" for t in self.tasks) or self._next_pending() is not None:
            raise IllegalTransitionError("the run still has tasks to do")
        failed = any(t["status"] == "failed" for t in self.tasks)
        self._finished(status="failed" if failed else "succeeded", at=now)

    def _check_status(self, status: str) -> None:
        if self.status != status:
            raise IllegalTransitionError(f"the run is {self.status}, not {status}")

    def _check_running_task(self, index: int) -> None:
        self._check_status("running")
        if self.tasks[index]["status"] != "running":
            raise IllegalTransitionError(f"task {index} is {self.tasks[index]['status']}, not running")

    # Events.

    @event(Missed)
    def _missed(self, missed_from: datetime, missed_through: datetime, count: int, at: datetime) -> None:
        self.status, self.finished_at, self.next_step_at = "missed", at, None
        self.missed = {"from": missed_from, "through": missed_through, "count": count}
        self.reason = {"code": "missed", "message": f"{count} due time{'s' if count != 1 else ''} passed while no "
                                                    "schedules worker was running, beyond the grace window"}
        self._not_run()

    @event(Skipped)
    def _skipped(self, code: str, message: str, at: datetime) -> None:
        self.status, self.finished_at, self.next_step_at = "skipped", at, None
        self.reason = {"code": code, "message": message}
        self._not_run()

    @event(Started)
    def _started(self, at: datetime, next_step_at: datetime) -> None:
        self.status, self.started_at, self.next_step_at = "running", at, next_step_at

    @event(TaskStarted)
    def _task_started(self, index: int, at: datetime, operation_id: UUID | None, next_step_at: datetime) -> None:
        self.tasks[index] = {**self.tasks[index], "status": "running", "started_at": at, "operation_id": operation_id}
        self.next_step_at = next_step_at

    @event(TaskSucceeded)
    def _task_succeeded(self, index: int, at: datetime, detail: dict[str, Any], next_step_at: datetime) -> None:
        self.tasks[index] = {**self.tasks[index], "status": "succeeded", "finished_at": at, "detail": detail}
        self.next_step_at = next_step_at

    @event(TaskFailed)
    def _task_failed(self, index: int, at: datetime, code: str, message: str, next_step_at: datetime) -> None:
        self.tasks[index] = {**self.tasks[index], "status": "failed", "finished_at": at,
                             "error": {"code": code, "message": message}}
        self.next_step_at = next_step_at

    @event(Finished)
    def _finished(self, status: str, at: datetime) -> None:
        self.status, self.finished_at, self.next_step_at = status, at, None
        failed = next((t for t in self.tasks if t["status"] == "failed"), None)
        if failed is not None:
            self.reason = dict(failed["error"])
        self._not_run()

    def _not_run(self) -> None:
        self.tasks = [{**t, "status": "not_run"} if t["status"] == "pending" else t for t in self.tasks]
