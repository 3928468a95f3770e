"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import metrics, problems
from api.routers import admin, billing, console, files, instances, lifecycle, portal, probes, support, users
from services.bootstrap import Container


def create_app(container: Container) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    app = FastAPI(
        title="ZLH control plane",
        version="0.1.0",
        description="Game servers and dev containers, provisioned asynchronously from an event log.",
        lifespan=lifespan,
    )
    app.state.container = container
    problems.install(app)
    metrics.install(app, container)
    routers = (probes, users, instances, lifecycle, files, console, support, admin, billing)
    for module in routers:
        app.include_router(module.router)
    portal.install(app)  # last: every API route, probe and /docs keeps precedence over the static files
    return app
