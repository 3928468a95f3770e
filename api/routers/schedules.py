"""Schedules of a server (create, list, change, pause, delete, run now, runs) and its activity log.

The bodies are checked for shape here; the schedule's rules (a cron expression that parses and
fires, a known IANA timezone, each task's payload for its action) are the domain's, and a
violation is 422 `validation_error` naming the field (`cron: …`, `timezone: …`,
`tasks.1.payload: …`). Lists are keyset pages (`?limit=`, `?cursor=`, `next_cursor`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.consistency import read_your_writes
from api.deps import ContainerDep, UserDep
from api.openapi import IDEMPOTENCY_KEY
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.problems import Problem
from api.routers.instances import check_optional_key
from api.schemas import FreeText
from api.server_access import Grant, OwnerGrant, SchedulesGrant
from domain.schedule import MAX_COMMAND, MAX_CRON, MAX_DELAY_SECONDS, MAX_NAME, MAX_TASKS, MAX_TIMEZONE
from projections import activity as activity_view
from projections import schedules as schedules_view
from projections.base import iso
from services import schedules
from services.server_access import check_task_permissions

router = APIRouter(prefix="/api/instances", tags=["schedules"])


class TaskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["command", "power", "backup"]
    payload: str | None = Field(default=None, max_length=MAX_COMMAND, description="command: the console line; "
                                "power: start, stop or restart; backup: null")
    delay_seconds: int = Field(default=0, ge=0, le=MAX_DELAY_SECONDS, description="seconds to wait before this task "
                               "(after the run begins, or after the previous task ended)")
    continue_on_failure: bool = Field(default=False, description="false: a failure of this task ends the run")


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: FreeText = Field(min_length=1, max_length=MAX_NAME)
    cron: str = Field(min_length=1, max_length=MAX_CRON, description="five fields (minute hour day-of-month month "
                      "day-of-week), or @hourly, @daily, @weekly, @monthly, @yearly", examples=["0 4 * * *"])
    timezone: str = Field(default="UTC", min_length=1, max_length=MAX_TIMEZONE, description="an IANA timezone")
    only_when_running: bool = False
    enabled: bool = True
    tasks: list[TaskIn] = Field(min_length=1, max_length=MAX_TASKS)


class SchedulePatch(BaseModel):
    """Only the fields sent change; `{"enabled": false}` pauses, `{"enabled": true}` resumes."""

    model_config = ConfigDict(extra="forbid")

    name: FreeText | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    cron: str | None = Field(default=None, min_length=1, max_length=MAX_CRON)
    timezone: str | None = Field(default=None, min_length=1, max_length=MAX_TIMEZONE)
    only_when_running: bool | None = None
    enabled: bool | None = None
    tasks: list[TaskIn] | None = Field(default=None, min_length=1, max_length=MAX_TASKS)


class TaskOut(BaseModel):
    action: str
    payload: str | None
    delay_seconds: int
    continue_on_failure: bool


class LastRun(BaseModel):
    id: str
    status: str
    due_at: str
    finished_at: str | None


class ScheduleOut(BaseModel):
    id: str
    instance_id: str
    name: str
    cron: str
    timezone: str
    only_when_running: bool
    enabled: bool
    tasks: list[TaskOut]
    next_run_at: str | None
    last_run: LastRun | None
    created_at: str
    updated_at: str


class ScheduleList(BaseModel):
    items: list[ScheduleOut]
    next_cursor: str | None


class Problemlet(BaseModel):
    code: str
    message: str


class RunTaskOut(TaskOut):
    index: int
    status: Literal["pending", "running", "succeeded", "failed", "not_run"]
    started_at: str | None
    finished_at: str | None
    operation_id: str | None
    error: Problemlet | None


class Missed(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", serialization_alias="from")
    through: str
    count: int


class RunOut(BaseModel):
    id: str
    schedule_id: str
    trigger: Literal["schedule", "manual"]
    actor_id: str | None
    due_at: str
    planned_at: str
    started_at: str | None
    finished_at: str | None
    status: Literal["pending", "running", "succeeded", "failed", "missed", "skipped"]
    reason: Problemlet | None
    missed: Missed | None
    tasks: list[RunTaskOut]


class RunList(BaseModel):
    items: list[RunOut]
    next_cursor: str | None


class RunAccepted(BaseModel):
    run_id: str
    status_url: str


class Actor(BaseModel):
    id: str | None
    email: str | None
    kind: Literal["user", "schedule", "system"]


class ActivityItem(BaseModel):
    id: str
    at: str
    actor: Actor
    action: str
    detail: dict[str, Any]


class ActivityList(BaseModel):
    items: list[ActivityItem]
    next_cursor: str | None


def _page(rows: list[dict[str, Any]], limit: int, *keys: str) -> str | None:
    """The cursor after the page's last item when there is more (`rows` holds one more than the page)."""
    return encode_cursor(*(str(rows[limit - 1][k]) for k in keys)) if len(rows) > limit else None


def _after(cursor: str | None) -> tuple[str, str] | None:
    if cursor is None:
        return None
    first, second = decode_cursor(cursor, 2)
    return first, second


def _check_tasks(container: ContainerDep, grant: Grant, schedule_id: UUID | None,
                 tasks: list[dict[str, Any]] | None) -> None:
    """A subuser needs the permission of every task of the schedule, as it is and as it would be."""
    if grant.role != "subuser":
        return
    actions = [t["action"] for t in tasks or []]
    if schedule_id is not None:
        actions += [t["action"] for t in schedules.load_schedule(container.app, grant.instance_id, schedule_id,
                                                                 grant.owner_id).tasks]
    check_task_permissions(grant, actions)


def _schedule_out(container: ContainerDep, schedule_id: UUID) -> dict[str, Any]:
    """The schedule as the read model shows it; from the log itself if the read model is not there yet."""
    row = schedules_view.get(container.db, str(schedule_id))
    if row is not None:
        return row
    aggregate = container.app.repository.get(schedule_id)
    return {"id": str(aggregate.id), "instance_id": str(aggregate.instance_id), "name": aggregate.name,
            "cron": aggregate.cron, "timezone": aggregate.timezone, "only_when_running": aggregate.only_when_running,
            "enabled": aggregate.enabled, "tasks": aggregate.tasks,
            "next_run_at": iso(aggregate.next_run_at) if aggregate.next_run_at else None, "last_run": None,
            "created_at": iso(aggregate.created_on), "updated_at": iso(aggregate.modified_on)}


@router.post("/{instance_id}/schedules", status_code=201, response_model=ScheduleOut)
async def create(instance_id: UUID, body: ScheduleIn, response: Response, user: UserDep, grant: SchedulesGrant,
                 container: ContainerDep) -> dict[str, Any]:
    fields = body.model_dump()
    _check_tasks(container, grant, None, fields["tasks"])
    written = await run_in_threadpool(schedules.create_schedule, container.app, grant.owner_id, user.id, instance_id,
                                      fields, datetime.now(UTC), container.db)
    await read_your_writes(container, response, written.position, "schedules")
    response.headers["Location"] = f"/api/instances/{instance_id}/schedules/{written.id}"
    return await run_in_threadpool(_schedule_out, container, written.id)


@router.get("/{instance_id}/schedules", response_model=ScheduleList)
def list_schedules(instance_id: UUID, grant: SchedulesGrant, container: ContainerDep, limit: LimitQuery = 100,
                   cursor: CursorQuery = None) -> dict[str, Any]:
    rows = schedules_view.list_for_instance(container.db, str(instance_id), limit + 1, _after(cursor))
    return {"items": rows[:limit], "next_cursor": _page(rows, limit, "created_at", "id")}


@router.get("/{instance_id}/schedules/{schedule_id}", response_model=ScheduleOut)
def get_schedule(instance_id: UUID, schedule_id: UUID, grant: SchedulesGrant,
                 container: ContainerDep) -> dict[str, Any]:
    schedules.load_schedule(container.app, instance_id, schedule_id, grant.owner_id)
    return _schedule_out(container, schedule_id)


@router.patch("/{instance_id}/schedules/{schedule_id}", response_model=ScheduleOut)
async def change(instance_id: UUID, schedule_id: UUID, body: SchedulePatch, response: Response, user: UserDep,
                 grant: SchedulesGrant,
                 container: ContainerDep) -> dict[str, Any]:
    changes = {k: getattr(body, k) for k in body.model_fields_set}
    nulls = sorted(k for k, v in changes.items() if v is None)
    if nulls:
        raise Problem(422, "validation_error", f"{nulls[0]}: must not be null (leave it out to keep it)")
    if "tasks" in changes:
        changes["tasks"] = [t.model_dump() for t in body.tasks or []]
    await run_in_threadpool(_check_tasks, container, grant, schedule_id, changes.get("tasks"))
    written = await run_in_threadpool(schedules.revise_schedule, container.app, grant.owner_id, user.id, instance_id,
                                      schedule_id, changes, datetime.now(UTC))
    await read_your_writes(container, response, written.position, "schedules")
    return await run_in_threadpool(_schedule_out, container, schedule_id)


@router.delete("/{instance_id}/schedules/{schedule_id}", status_code=204)
async def delete(instance_id: UUID, schedule_id: UUID, user: UserDep, grant: SchedulesGrant,
                 container: ContainerDep) -> Response:
    await run_in_threadpool(_check_tasks, container, grant, schedule_id, None)
    position = await run_in_threadpool(schedules.delete_schedule, container.app, grant.owner_id, user.id, instance_id,
                                       schedule_id)
    response = Response(status_code=204)
    await read_your_writes(container, response, position, "schedules")
    return response


@router.post("/{instance_id}/schedules/{schedule_id}/run", status_code=202, response_model=RunAccepted)
async def run_now(instance_id: UUID, schedule_id: UUID, response: Response, user: UserDep, grant: SchedulesGrant,
                  container: ContainerDep,
                  idempotency_key: Annotated[str | None, Header(json_schema_extra=IDEMPOTENCY_KEY)] = None
                  ) -> dict[str, str]:
    key = grant.request_key(check_optional_key(idempotency_key))
    await run_in_threadpool(_check_tasks, container, grant, schedule_id, None)
    written = await run_in_threadpool(schedules.run_now, container.app, grant.owner_id, user.id, instance_id,
                                      schedule_id, datetime.now(UTC), key)
    if written.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    await read_your_writes(container, response, written.position, "schedules")
    status_url = f"/api/instances/{instance_id}/schedules/{schedule_id}/runs/{written.id}"
    response.headers["Location"] = status_url
    return {"run_id": str(written.id), "status_url": status_url}


@router.get("/{instance_id}/schedules/{schedule_id}/runs", response_model=RunList)
def list_runs(instance_id: UUID, schedule_id: UUID, grant: SchedulesGrant, container: ContainerDep,
              limit: LimitQuery = 100,
              cursor: CursorQuery = None) -> dict[str, Any]:
    schedules.load_schedule(container.app, instance_id, schedule_id, grant.owner_id)
    rows = schedules_view.list_runs(container.db, str(schedule_id), limit + 1, _after(cursor))
    return {"items": rows[:limit], "next_cursor": _page(rows, limit, "due_at", "id")}


@router.get("/{instance_id}/schedules/{schedule_id}/runs/{run_id}", response_model=RunOut)
def get_run(instance_id: UUID, schedule_id: UUID, run_id: UUID, grant: SchedulesGrant,
            container: ContainerDep) -> dict[str, Any]:
    schedules.load_schedule(container.app, instance_id, schedule_id, grant.owner_id)
    row = schedules_view.get_run(container.db, str(run_id))
    if row is None or row["schedule_id"] != str(schedule_id):
        raise Problem(404, "not_found", "no such run")
    return row


@router.get("/{instance_id}/activity", response_model=ActivityList)
def activity(instance_id: UUID, grant: OwnerGrant, container: ContainerDep, limit: LimitQuery = 100,
             cursor: CursorQuery = None) -> dict[str, Any]:
    """Who did what and when on this server, newest first: power, backups, restores, console commands, file writes
    (path and size), schedules and their runs, billing suspensions."""
    rows = activity_view.list_for_instance(container.db, str(instance_id), limit + 1, _after(cursor))
    return {"items": rows[:limit], "next_cursor": _page(rows, limit, "at", "id")}
