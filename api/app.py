"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import metrics, problems
from api.access import AccessMiddleware
from api.routers import (
    admin,
    backups,
    billing,
    console,
    files,
    instances,
    lifecycle,
    portal,
    probes,
    support,
    tokens,
    users,
)
from services.bootstrap import Container


def create_app(container: Container) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        container.start_api()
        yield

    app = FastAPI(
        title="ZLH control plane",
        version="0.1.0",
        description="Game servers and dev containers, provisioned asynchronously from an event log.",
        lifespan=lifespan,
    )
    app.state.container = container
    problems.install(app)
    app.add_middleware(AccessMiddleware, container=container)  # inside metrics: refusals are measured too
    metrics.install(app, container)
    routers = (probes, users, tokens, instances, lifecycle, backups, files, console, support, admin, billing)
    for module in routers:
        app.include_router(module.router)
    portal.install(app)  # last: every API route, probe and /docs keeps precedence over the static files
    return app
