"""FastAPI dependencies: the container, the authenticated caller, admin checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.problems import Problem
from services.bootstrap import Container
from services.users import Principal, authenticate


def get_container(request: Request) -> Container:
    return request.app.state.container


ContainerDep = Annotated[Container, Depends(get_container)]


def current_user(request: Request, container: ContainerDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "unauthorized", "send Authorization: Bearer TOKEN",
                      {"WWW-Authenticate": "Bearer"})
    principal = authenticate(container.app, token.strip())
    if principal is None:
        raise Problem(401, "unauthorized", "the bearer token is not valid", {"WWW-Authenticate": "Bearer"})
    return principal


UserDep = Annotated[Principal, Depends(current_user)]


def admin_user(user: UserDep) -> Principal:
    if not user.admin:
        raise Problem(403, "forbidden", "this route is for administrators")
    return user


AdminDep = Annotated[Principal, Depends(admin_user)]
