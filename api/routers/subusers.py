"""A server's subusers: its owner invites other users by email, with permissions, changes and removes them.

Only the owner (or an operator) manages them: a subuser gets 403 `permission_denied`, anyone else 404.
An invitation answers 201 with the membership whether or not an account with that email exists (the
API never tells an owner which emails have accounts); a membership for an email with no account yet
takes effect when that account is made. Inviting someone who is on the server already is 409
`subuser_exists` (change their permissions with PATCH).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.consistency import read_your_writes
from api.deps import ContainerDep, UserDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.problems import Problem
from api.server_access import OwnerGrant
from domain.subuser import PERMISSIONS, Subuser, subuser_id
from projections import subusers as subusers_view
from projections.base import iso
from services import subusers

router = APIRouter(prefix="/api/instances", tags=["subusers"])

EMAIL_PATTERN = r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$"  # surrounding spaces are trimmed
PERMISSIONS_DOC = f"each at most once, from: {', '.join(PERMISSIONS)}"


class SubuserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN, description="the person's account email")
    permissions: list[str] = Field(max_length=len(PERMISSIONS) * 2, description=PERMISSIONS_DOC,
                                   examples=[["console", "power"]])


class SubuserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    permissions: list[str] = Field(max_length=len(PERMISSIONS) * 2, description="the permissions they hold from now "
                                   f"on (replacing the previous ones), {PERMISSIONS_DOC}")


class SubuserOut(BaseModel):
    user_id: str
    email: str
    permissions: list[str]
    created_at: str
    updated_at: str


class SubuserList(BaseModel):
    items: list[SubuserOut]
    next_cursor: str | None


def _member(container: ContainerDep, instance_id: UUID, user_id: UUID) -> dict[str, Any]:
    """The membership as the read model shows it; from its stream if the read model is not there yet."""
    row = subusers_view.get(container.db, str(instance_id), str(user_id))
    if row is not None:
        return row
    membership = container.app.find(subuser_id(instance_id, user_id), Subuser)
    if membership is None or not membership.active:
        raise Problem(404, "not_found", "no such subuser")
    return {"user_id": str(user_id), "email": membership.email, "permissions": membership.permissions,
            "created_at": iso(membership.created_on), "updated_at": iso(membership.modified_on)}


@router.get("/{instance_id}/subusers", response_model=SubuserList)
def list_subusers(instance_id: UUID, grant: OwnerGrant, container: ContainerDep, limit: LimitQuery = 100,
                  cursor: CursorQuery = None) -> dict[str, Any]:
    """The server's subusers, newest first, each with their permissions."""
    after = tuple(decode_cursor(cursor, 2)) if cursor else None
    rows = subusers_view.list_for_instance(container.db, str(instance_id), limit + 1, after)  # type: ignore[arg-type]
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": rows, "next_cursor": encode_cursor(rows[-1]["created_at"], rows[-1]["_id"]) if more else None}


@router.post("/{instance_id}/subusers", status_code=201, response_model=SubuserOut)
async def invite(instance_id: UUID, body: SubuserIn, response: Response, user: UserDep, grant: OwnerGrant,
                 container: ContainerDep) -> dict[str, Any]:
    """Give the user with this email the permissions on this server (201, the same for any email)."""
    written = await run_in_threadpool(subusers.invite, container.app, grant, user.id, body.email, body.permissions)
    await read_your_writes(container, response, written.position, "subusers", "activity")
    response.headers["Location"] = f"/api/instances/{instance_id}/subusers/{written.user_id}"
    return await run_in_threadpool(_member, container, instance_id, written.user_id)


@router.get("/{instance_id}/subusers/{user_id}", response_model=SubuserOut)
def get_subuser(instance_id: UUID, user_id: UUID, grant: OwnerGrant, container: ContainerDep) -> dict[str, Any]:
    return _member(container, instance_id, user_id)


@router.patch("/{instance_id}/subusers/{user_id}", response_model=SubuserOut)
async def change(instance_id: UUID, user_id: UUID, body: SubuserPatch, response: Response, user: UserDep,
                 grant: OwnerGrant, container: ContainerDep) -> dict[str, Any]:
    """Replace the subuser's permissions; they hold from the subuser's next request."""
    written = await run_in_threadpool(subusers.change, container.app, grant, user.id, user_id, body.permissions)
    await read_your_writes(container, response, written.position, "subusers", "activity")
    return await run_in_threadpool(_member, container, instance_id, user_id)


@router.delete("/{instance_id}/subusers/{user_id}", status_code=204)
async def remove(instance_id: UUID, user_id: UUID, user: UserDep, grant: OwnerGrant,
                 container: ContainerDep) -> Response:
    """Take the subuser off the server: from their next request it is 404 to them."""
    written = await run_in_threadpool(subusers.remove, container.app, grant, user.id, user_id)
    response = Response(status_code=204)
    await read_your_writes(container, response, written.position, "subusers", "activity")
    return response
