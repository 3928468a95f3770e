"""The permission check of every route under `/api/instances/{instance_id}`, as one FastAPI dependency.

A route declares what it needs in its signature, `grant: PowerGrant` (or `OwnerGrant`, `MemberGrant`, ...), and
gets the caller's `Grant` (services/server_access.py) or never runs: 404 `not_found` for a server the
caller is not on, 403 `permission_denied` (naming the permission) for one they are on without it. The
dependency carries the permission it checks (`PERMISSION_ATTRIBUTE`), so a test can walk the routes and
find any that has none.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends
from starlette.concurrency import run_in_threadpool

from api.deps import ContainerDep, UserDep
from services.server_access import (
    BACKUPS,
    CONSOLE,
    FILES_READ,
    FILES_WRITE,
    MANAGE,
    MEMBER,
    POWER,
    SCHEDULES,
    SETTINGS,
    Grant,
    authorize,
    permission_of,
)

PERMISSION_ATTRIBUTE = "zlh_permission"

__all__ = ["MANAGE", "MEMBER", "BackupsGrant", "ConsoleGrant", "FilesReadGrant", "FilesWriteGrant", "Grant",
           "MemberGrant", "OwnerGrant", "PowerGrant", "SchedulesGrant", "SettingsGrant", "requires"]


def requires(permission: str) -> Any:
    """A dependency answering the caller's grant on the path's `instance_id` if it includes `permission`."""
    need = permission_of(permission)

    async def check(instance_id: UUID, user: UserDep, container: ContainerDep) -> Grant:
        return await run_in_threadpool(authorize, container.app, user.id, user.admin, instance_id, need)

    setattr(check, PERMISSION_ATTRIBUTE, need)
    check.__name__ = f"requires_{need.replace('.', '_')}"
    return Depends(check)


#: The grant a route gets, by what it needs.
MemberGrant = Annotated[Grant, requires(MEMBER)]
OwnerGrant = Annotated[Grant, requires(MANAGE)]
ConsoleGrant = Annotated[Grant, requires(CONSOLE)]
PowerGrant = Annotated[Grant, requires(POWER)]
FilesReadGrant = Annotated[Grant, requires(FILES_READ)]
FilesWriteGrant = Annotated[Grant, requires(FILES_WRITE)]
BackupsGrant = Annotated[Grant, requires(BACKUPS)]
SchedulesGrant = Annotated[Grant, requires(SCHEDULES)]
SettingsGrant = Annotated[Grant, requires(SETTINGS)]
