"""Power, delete and backups: each answers 202 with an operation the provisioning worker runs."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.consistency import read_your_writes
from api.deps import ContainerDep, UserDep
from api.openapi import IDEMPOTENCY_KEY
from api.pagination import CursorQuery, LimitQuery, page
from api.routers.backups import DELETE_RESPONSES, DeletionAccepted, delete_backup
from api.routers.instances import check_optional_key
from api.server_access import BackupsGrant, OwnerGrant, PowerGrant
from projections import backups as backups_view
from services.backup_policy import backup_retention, set_backup_retention
from services.lifecycle import Queued, request_backup, request_delete, request_power, request_restore

router = APIRouter(prefix="/api/instances", tags=["lifecycle"])

KeyHeader = Annotated[str | None, Header(alias="Idempotency-Key", json_schema_extra=IDEMPOTENCY_KEY)]


class PowerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["start", "stop", "restart"]


class OperationAccepted(BaseModel):
    operation_id: str
    status_url: str


class BackupAccepted(OperationAccepted):
    backup_id: str


class BackupOut(BaseModel):
    id: str
    status: str
    size: int | None
    sha256: str | None
    created_at: str
    completed_at: str | None
    location: str = "local"  # where the archive is: `local` (the node's disk) or `s3`


class BackupList(BaseModel):
    items: list[BackupOut]
    next_cursor: str | None = None


async def _answer(queued: Queued, response: Response, container: ContainerDep, *views: str) -> dict[str, str]:
    """The 202 answer, once the instance, its operation (and any `views` more) show the change."""
    if queued.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    await read_your_writes(container, response, queued.position, "instances", "operations", *views)
    status_url = f"/api/operations/{queued.operation_id}"
    response.headers["Location"] = status_url
    return {"operation_id": str(queued.operation_id), "status_url": status_url}


@router.post("/{instance_id}/power", status_code=202, response_model=OperationAccepted)
async def power(instance_id: UUID, body: PowerRequest, response: Response, user: UserDep, grant: PowerGrant,
                container: ContainerDep, idempotency_key: KeyHeader = None) -> dict[str, str]:
    key = grant.request_key(check_optional_key(idempotency_key))
    queued = await run_in_threadpool(request_power, container.app, grant.owner_id, instance_id,
                                     body.action, key, actor_id=user.id)
    return await _answer(queued, response, container)


@router.delete("/{instance_id}", status_code=202, response_model=OperationAccepted)
async def delete(instance_id: UUID, response: Response, user: UserDep, grant: OwnerGrant, container: ContainerDep,
                 keep_backups: Annotated[bool, Query(description="false also deletes the backups")] = True,
                 idempotency_key: KeyHeader = None) -> dict[str, str]:
    """Delete the server (its owner only: a subuser gets 403 `permission_denied`)."""
    key = check_optional_key(idempotency_key)
    queued = await run_in_threadpool(request_delete, container.app, grant.owner_id, instance_id,
                                     keep_backups, key, actor_id=user.id)
    return await _answer(queued, response, container)


@router.post("/{instance_id}/backups", status_code=202, response_model=BackupAccepted)
async def create_backup(instance_id: UUID, response: Response, user: UserDep, grant: BackupsGrant,
                        container: ContainerDep, idempotency_key: KeyHeader = None) -> dict[str, str]:
    key = grant.request_key(check_optional_key(idempotency_key))
    queued = await run_in_threadpool(request_backup, container.app, grant.owner_id, instance_id, key,
                                     container.quotas, actor_id=user.id)
    return {**await _answer(queued, response, container, "backups"), "backup_id": str(queued.backup_id)}


@router.get("/{instance_id}/backups", response_model=BackupList)
def list_backups(instance_id: UUID, grant: BackupsGrant, container: ContainerDep, limit: LimitQuery = 100,
                 cursor: CursorQuery = None) -> BackupList:
    """The server's backups that are not deleted, newest first, a page at a time."""
    rows, next_cursor = page(lambda n, after: backups_view.list_for_instance(
        container.db, str(instance_id), n, after, include_deleted=False), limit, cursor)
    return BackupList(items=[BackupOut(**r) for r in rows], next_cursor=next_cursor)


@router.post("/{instance_id}/backups/{backup_id}/restore", status_code=202, response_model=OperationAccepted)
async def restore(instance_id: UUID, backup_id: UUID, response: Response, user: UserDep, grant: BackupsGrant,
                  container: ContainerDep, idempotency_key: KeyHeader = None) -> dict[str, str]:
    key = grant.request_key(check_optional_key(idempotency_key))
    queued = await run_in_threadpool(request_restore, container.app, grant.owner_id, instance_id,
                                     backup_id, key, actor_id=user.id)
    return await _answer(queued, response, container)


@router.delete("/{instance_id}/backups/{backup_id}", status_code=202, response_model=DeletionAccepted,
               responses=DELETE_RESPONSES)
async def delete_instance_backup(instance_id: UUID, backup_id: UUID, response: Response, user: UserDep,
                                 grant: BackupsGrant, container: ContainerDep, idempotency_key: KeyHeader = None
                                 ) -> DeletionAccepted | Response:
    """The same as `DELETE /api/backups/{backup_id}`, for a backup of this server (another's: 404)."""
    key = grant.request_key(check_optional_key(idempotency_key))
    return await delete_backup(user, container, backup_id, instance_id, key, response, owner_id=grant.owner_id)


class RetentionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep: Annotated[int | None, Field(ge=1, le=1000, description="automatic backups kept; null: the default")]


class RetentionOut(BaseModel):
    keep: int | None
    default: int | None
    effective: int | None


@router.get("/{instance_id}/backups/retention", response_model=RetentionOut)
def get_retention(instance_id: UUID, grant: BackupsGrant, container: ContainerDep) -> RetentionOut:
    """How many automatic (scheduled) backups this server keeps: its own `keep`, else the operator's `default`
    (`ZLH_BACKUP_RETENTION`); `effective` null: kept until the backups quota is reached."""
    r = backup_retention(container.app, grant.owner_id, instance_id, container.settings.backup_retention)
    return RetentionOut(keep=r.keep, default=r.default, effective=r.effective)


@router.put("/{instance_id}/backups/retention", response_model=RetentionOut)
async def put_retention(instance_id: UUID, body: RetentionIn, user: UserDep, grant: BackupsGrant,
                        container: ContainerDep) -> RetentionOut:
    """Keep this many automatic backups of this server (1-1000; null: the default). After each backup the oldest
    automatic ones beyond it are pruned, and the pruning is recorded; backups a person made are never pruned."""
    r = await run_in_threadpool(set_backup_retention, container.app, grant.owner_id, instance_id, body.keep, user.id,
                                container.settings.backup_retention)
    return RetentionOut(keep=r.keep, default=r.default, effective=r.effective)

