"""FastAPI dependencies: the container, the authenticated caller, scope and admin checks.

The caller comes from the access middleware's decision (api/access.py), which authenticated the
token and applied the rate limits before the route; these dependencies are async and do no I/O then.
A `read` token may only GET and HEAD: anything else is 403 `insufficient_scope`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from api.problems import Problem
from services.bootstrap import Container
from services.users import Principal

READ_METHODS = frozenset({"GET", "HEAD"})


async def get_container(request: Request) -> Container:
    return request.app.state.container


ContainerDep = Annotated[Container, Depends(get_container)]


async def current_user(request: Request, container: ContainerDep) -> Principal:
    decision = request.scope.get("state", {}).get("access")
    if decision is not None:
        principal = decision.principal
    else:  # no middleware decided (no bearer token, or an app without the middleware)
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(401, "unauthorized", "send Authorization: Bearer TOKEN", {"WWW-Authenticate": "Bearer"})
        principal = await run_in_threadpool(container.access.authenticator.authenticate, token.strip())
    if principal is None:
        raise Problem(401, "unauthorized", "the bearer token is not valid (unknown, revoked or expired, or its "
                      "user is disabled)", {"WWW-Authenticate": "Bearer"})
    if principal.scope != "full" and request.method not in READ_METHODS:
        raise Problem(403, "insufficient_scope", f"this token's scope is {principal.scope}: it can only read "
                      "(GET); use a full token to change anything", {"WWW-Authenticate": 'Bearer error='
                                                                      '"insufficient_scope"'})
    return principal


UserDep = Annotated[Principal, Depends(current_user)]


async def admin_user(user: UserDep) -> Principal:
    if not user.admin:
        raise Problem(403, "forbidden", "this route is for administrators")
    return user


AdminDep = Annotated[Principal, Depends(admin_user)]
