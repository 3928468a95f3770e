"""Operators and auditors: streams and their verification, projections, queues, repairs."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from api.deps import AdminDep, ContainerDep
from api.pagination import CursorQuery, LimitQuery, page, page_of
from api.problems import Problem
from api.schemas import DeadLetter, ProjectionList, ProjectionOut, Stream, StreamEvent
from domain.repair import ControllerLeadership, RepairStatus
from projections import repairs as repairs_view
from services import soak
from services.audit import stream_events, verify_stream
from services.infrastructure.projection_runner import ProjectionRunner
from services.queues import queue_stats
from services.settings import parse_duration

#: A read model or process manager name, as `GET /api/admin/projections` and `/api/admin/queues` list them.
ProjectionName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,63}$")]

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.get("/streams/{stream_id}/events", response_model=Stream)
def stream(stream_id: UUID, _: AdminDep, container: ContainerDep) -> Stream:
    events = stream_events(container.app, stream_id)
    if not events:
        raise Problem(404, "not_found", "no such stream")
    return Stream(id=str(stream_id), events=[StreamEvent(**e) for e in events])


@router.get("/streams/{stream_id}/verify")
def verify(stream_id: UUID, _: AdminDep, container: ContainerDep) -> dict[str, Any]:
    """Recompute the stream's hash chain (as `zlh audit stream ID --verify`); 404 if there is no such stream."""
    result = verify_stream(container.app, stream_id)
    if result.status == "missing":
        raise Problem(404, "not_found", "no such stream")
    return {"id": str(stream_id), "ok": result.ok, "status": result.status, "checked": result.checked,
            "first_broken_version": result.first_broken_version, "detail": result.reason}


class RepairOut(BaseModel):
    id: str
    kind: str
    level: int
    target: str
    status: str
    mode: str
    created_at: str
    updated_at: str
    instance_id: str | None
    epoch: int
    reason: str | None
    error: dict[str, str] | None
    findings: list[dict[str, str]]


class RepairList(BaseModel):
    items: list[RepairOut]
    next_cursor: str | None = None
    controller: dict[str, Any]
    drift: list[dict[str, Any]]


@router.get("/repairs", response_model=RepairList)
def repairs(_: AdminDep, container: ContainerDep, status: RepairStatus | None = None, limit: LimitQuery = 100,
            cursor: CursorQuery = None) -> RepairList:
    """Every repair, newest first (`?status=` filters), with the controller's mode and the current drift."""
    settings = container.settings
    controller: dict[str, Any] = {
        "mode": settings.controller_mode, "interval_seconds": settings.controller_interval,
        "operation_stale_after_seconds": settings.operation_stale_after, "executable_levels": [1],
        "level2_setting": settings.controller_level2,
    }
    # The current term, from the log: whichever process leads.
    leadership = container.app.find(ControllerLeadership.create_id(), ControllerLeadership)
    controller |= {"epoch": leadership.epoch if leadership else 0, "leader": leadership.holder if leadership else None}
    if container.controller is not None:  # the controller of this very process, when it runs one
        controller |= {"this_process": container.controller.status.as_dict(),
                       "state": container.controller.status.state}
    rows, next_cursor = page(lambda n, after: repairs_view.list_repairs(
        container.db, status.value if status else None, n, after), limit, cursor)
    return RepairList(items=[RepairOut(**r) for r in rows], next_cursor=next_cursor,
                      controller=controller, drift=repairs_view.current_drift(container.db))


def parse_since(value: str, now: datetime) -> datetime:
    """`7d`, `36h`, `90m` (a duration back from now) or an RFC 3339 timestamp with a timezone."""
    try:
        return now - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise Problem(422, "validation_error", "since: a duration such as 7d or 12h, or an RFC 3339 timestamp "
                      "with a timezone")
    return moment


@router.get("/repairs/report")
def repairs_report(_: AdminDep, container: ContainerDep,
                   since: Annotated[str, Query(max_length=64, description="7d, 12h or an RFC 3339 timestamp")] = "7d"
                   ) -> dict[str, Any]:
    """The controller's soak report since `since`: per repair kind, how many were proposed, would have run in
    live mode (Level 1, no guard), would have been escalated by the hourly limit, were skipped and why; the
    targets that drifted most; and the verdict ("N Level 1 repairs would have run; none touched a suspended
    server")."""
    now = datetime.now(UTC)
    return soak.report(container.app, container.db, parse_since(since, now), container.settings.controller_mode,
                       now)


class QueueOut(BaseModel):
    name: str
    pending: int
    oldest_pending_age_seconds: float | None
    lag: int
    dead_letters: list[DeadLetter]


class QueueList(BaseModel):
    items: list[QueueOut]
    next_cursor: str | None = None


@router.get("/queues", response_model=QueueList)
def queues(_: AdminDep, container: ContainerDep, limit: LimitQuery = 100, cursor: CursorQuery = None) -> QueueList:
    """Per process manager: pending work, the age of the oldest pending item, and its lag behind the log."""
    items, next_cursor = page_of([QueueOut(**q) for q in queue_stats(container.db, container.app.head())], limit,
                                 cursor)
    return QueueList(items=items, next_cursor=next_cursor)


@router.get("/projections", response_model=ProjectionList)
def projections(_: AdminDep, container: ContainerDep, limit: LimitQuery = 100,
                cursor: CursorQuery = None) -> ProjectionList:
    items, next_cursor = page_of([ProjectionOut(**p) for p in container.projection_status()], limit, cursor)
    return ProjectionList(items=items, next_cursor=next_cursor)


@router.post("/projections/{name}/rebuild", status_code=202)
def rebuild(name: ProjectionName, _: AdminDep, container: ContainerDep) -> dict[str, str]:
    runner = container.runners.get(name)
    if runner is None:
        raise Problem(404, "not_found", f"no projection named {name!r}; see GET /api/admin/projections")
    if runner.progress.state in ("running", "swapping"):
        raise Problem(409, "rebuild_in_progress", f"{name} is already being rebuilt")
    runner.progress.state = "running"
    threading.Thread(target=_rebuild, args=(runner,), name=f"zlh-rebuild-{name}", daemon=True).start()
    return {"name": name, "status": "rebuilding", "status_url": "/api/admin/projections"}


@router.post("/projections/{name}/retry", status_code=202)
def retry(name: ProjectionName, _: AdminDep, container: ContainerDep) -> dict[str, str]:
    """Apply a read model's or a process manager's dead letters again, once their cause is fixed."""
    if name in container.runners:
        return rebuild(name, _, container) | {"status": "rebuilding"}
    try:
        status = container.retry_dead_letters(name)
    except KeyError:
        raise Problem(404, "not_found", f"no projection or process manager named {name!r}") from None
    return {"name": name, "status": status, "status_url": "/api/admin/queues"}


def _rebuild(runner: ProjectionRunner) -> None:
    # A failure is recorded in runner.progress (shown by GET /api/admin/projections) and logged.
    with contextlib.suppress(Exception):
        runner.rebuild()
