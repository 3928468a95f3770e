"""Users: who am I, and admins creating and listing users."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.consistency import read_your_writes
from api.deps import AdminDep, ContainerDep, UserDep
from api.schemas import CreateUser, UserCreated, UserOut
from projections import users as users_view
from services.users import create_user

router = APIRouter(prefix="/api", tags=["users"])


@router.get("/me", response_model=UserOut)
def me(user: UserDep) -> UserOut:
    return UserOut(id=str(user.id), email=user.email, admin=user.admin)


@router.post("/admin/users", status_code=201, response_model=UserCreated)
async def create(body: CreateUser, response: Response, _: AdminDep, container: ContainerDep) -> UserCreated:
    registered = await run_in_threadpool(create_user, container.app, body.email, body.admin)
    await read_your_writes(container, response, registered.position, "users")
    principal, token = registered.principal, registered.token
    return UserCreated(id=str(principal.id), email=principal.email, admin=principal.admin, token=token)


class UserListed(BaseModel):
    id: str
    email: str
    admin: bool
    created_at: str
    billing_state: str
    stripe_customer_id: str | None


class UserList(BaseModel):
    items: list[UserListed]


@router.get("/admin/users", response_model=UserList)
def list_all(_: AdminDep, container: ContainerDep) -> UserList:
    """Every user, newest first, with their billing state and linked Stripe customer (never a token)."""
    return UserList(items=[UserListed(**u) for u in users_view.list_users(container.db)])
