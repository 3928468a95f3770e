"""Users: who am I, and operators creating, listing, disabling and enabling users."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.consistency import read_your_writes
from api.deps import AdminDep, ContainerDep, UserDep
from api.pagination import CursorQuery, LimitQuery, page
from api.schemas import CreateUser, UserCreated, UserOut
from projections import users as users_view
from services.users import create_user, set_disabled

router = APIRouter(prefix="/api", tags=["users"])


class Me(UserOut):
    scope: str
    token_id: str | None


@router.get("/me", response_model=Me)
async def me(user: UserDep) -> Me:
    return Me(id=str(user.id), email=user.email, admin=user.admin, scope=user.scope,
              token_id=str(user.token_id) if user.token_id else None)


@router.post("/admin/users", status_code=201, response_model=UserCreated)
async def create(body: CreateUser, response: Response, _: AdminDep, container: ContainerDep) -> UserCreated:
    registered = await run_in_threadpool(create_user, container.app, body.email, body.admin)
    await read_your_writes(container, response, registered.position, "users", "tokens")
    principal, token = registered.principal, registered.token
    return UserCreated(id=str(principal.id), email=principal.email, admin=principal.admin, token=token)


class UserListed(BaseModel):
    id: str
    email: str
    admin: bool
    created_at: str
    billing_state: str
    stripe_customer_id: str | None
    disabled: bool


class UserList(BaseModel):
    items: list[UserListed]
    next_cursor: str | None = None


@router.get("/admin/users", response_model=UserList)
def list_all(_: AdminDep, container: ContainerDep, limit: LimitQuery = 100, cursor: CursorQuery = None) -> UserList:
    """Every user, newest first, with their billing state and linked Stripe customer (never a token)."""
    rows, next_cursor = page(lambda n, after: users_view.list_users(container.db, n, after), limit, cursor)
    return UserList(items=[UserListed(**u) for u in rows], next_cursor=next_cursor)


class UserState(UserOut):
    disabled: bool


async def _set_disabled(user_id: UUID, disabled: bool, response: Response, admin: AdminDep,
                        container: ContainerDep) -> UserState:
    user, position = await run_in_threadpool(set_disabled, container.app, admin.id, user_id, disabled)
    await read_your_writes(container, response, position, "tokens")
    container.access.authenticator.invalidate()
    return UserState(id=str(user.id), email=user.email, admin=user.admin, disabled=user.disabled)


@router.post("/admin/users/{user_id}/disable", response_model=UserState)
async def disable(user_id: UUID, response: Response, admin: AdminDep, container: ContainerDep) -> UserState:
    """Every token of the user answers 401 from the next request on; nothing else of theirs changes (their
    servers keep running). Your own account: 409 `cannot_disable_self`."""
    return await _set_disabled(user_id, True, response, admin, container)


@router.post("/admin/users/{user_id}/enable", response_model=UserState)
async def enable(user_id: UUID, response: Response, admin: AdminDep, container: ContainerDep) -> UserState:
    """The user's tokens (those not revoked or expired) work again."""
    return await _set_disabled(user_id, False, response, admin, container)
