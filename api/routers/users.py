"""Users: who am I, and admins creating users."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import AdminDep, ContainerDep, UserDep
from api.schemas import CreateUser, UserCreated, UserOut
from services.users import create_user

router = APIRouter(prefix="/api", tags=["users"])


@router.get("/me", response_model=UserOut)
def me(user: UserDep) -> UserOut:
    return UserOut(id=str(user.id), email=user.email, admin=user.admin)


@router.post("/admin/users", status_code=201, response_model=UserCreated)
async def create(body: CreateUser, _: AdminDep, container: ContainerDep) -> UserCreated:
    principal, token = await run_in_threadpool(create_user, container.app, body.email, body.admin)
    return UserCreated(id=str(principal.id), email=principal.email, admin=principal.admin, token=token)
