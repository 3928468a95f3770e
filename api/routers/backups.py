"""A customer's backups across their servers (deleted servers' too), and deleting one."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.consistency import read_your_writes
from api.deps import ContainerDep, UserDep
from api.openapi import KeyHeader
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.routers.instances import check_optional_key
from projections import backups as backups_view
from services.lifecycle import request_backup_deletion
from services.users import Principal

router = APIRouter(prefix="/api", tags=["backups"])


class CustomerBackup(BaseModel):
    id: str
    instance_id: str
    status: str
    size: int | None
    sha256: str | None
    created_at: str
    completed_at: str | None
    location: str = "local"  # where the archive is: `local` (the node's disk) or `s3`


class CustomerBackupList(BaseModel):
    items: list[CustomerBackup]
    next_cursor: str | None


class DeletionAccepted(BaseModel):
    operation_id: str
    status_url: str


@router.get("/backups", response_model=CustomerBackupList)
async def my_backups(user: UserDep, container: ContainerDep, limit: LimitQuery = 100,
                     cursor: CursorQuery = None) -> CustomerBackupList:
    """Your backups that are not deleted, newest first, including those of servers you deleted."""
    after = tuple(decode_cursor(cursor, 2)) if cursor else None
    rows = await run_in_threadpool(backups_view.list_for_owner, container.db, str(user.id), limit + 1, after)
    more = len(rows) > limit
    rows = rows[:limit]
    return CustomerBackupList(items=[CustomerBackup(**r) for r in rows],
                              next_cursor=encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None)


async def delete_backup(user: Principal, container: ContainerDep, backup_id: UUID, instance_id: UUID | None,
                        key: str | None, response: Response,
                        owner_id: UUID | None = None) -> DeletionAccepted | Response:
    """204 if the backup is deleted already; else 202 with the operation in which the node agent deletes it.

    `owner_id`: whose backup it must be when the caller's right to it was checked already (a server's route:
    the server's owner); else the caller's own, or anyone's for an operator. `key` is checked already."""
    owner = owner_id if owner_id is not None else None if user.admin else user.id
    queued = await run_in_threadpool(request_backup_deletion, container.app, owner, backup_id, instance_id, key,
                                     actor_id=user.id)
    if queued is None:
        return Response(status_code=204)
    if queued.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    await read_your_writes(container, response, queued.position, "instances", "operations", "backups")
    status_url = f"/api/operations/{queued.operation_id}"
    response.headers["Location"] = status_url
    return DeletionAccepted(operation_id=str(queued.operation_id), status_url=status_url)


DELETE_RESPONSES: dict[int | str, dict] = {204: {"description": "the backup is deleted already"}}


@router.delete("/backups/{backup_id}", status_code=202, response_model=DeletionAccepted, responses=DELETE_RESPONSES)
async def delete(backup_id: UUID, response: Response, user: UserDep, container: ContainerDep,
                 idempotency_key: KeyHeader = None
                 ) -> DeletionAccepted | Response:
    """Delete one of your backups (allowed in every billing state): 202 with an operation while the node agent
    removes the archive; 409 while the backup is being made or the server runs another operation (a restore)."""
    return await delete_backup(user, container, backup_id, None, check_optional_key(idempotency_key), response)
