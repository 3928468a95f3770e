"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import metrics, openapi, problems
from api.access import AccessMiddleware
from api.limits import BodyLimit
from api.routers import (
    admin,
    backups,
    billing,
    console,
    desk,
    docs,
    files,
    instances,
    lifecycle,
    nodes,
    portal,
    probes,
    schedules,
    sftp,
    stats,
    subusers,
    support,
    templates,
    tokens,
    users,
)
from api.security import SecurityHeaders
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
        docs_url=None,  # served by api/routers/docs.py from installed assets, not a CDN
        redoc_url=None,
    )
    app.state.container = container
    problems.install(app)
    # Pure ASGI middleware, innermost first: authentication and rate limits right before routing, body
    # limits before them, browser headers on every answer; the metrics middleware (outermost) measures them all.
    app.add_middleware(AccessMiddleware, container=container)
    app.add_middleware(BodyLimit, max_body=container.settings.max_body)
    app.add_middleware(SecurityHeaders)
    metrics.install(app, container)
    routers = (probes, users, tokens, templates, instances, lifecycle, backups, files, console, schedules, subusers,
               support, desk, admin, billing, nodes, stats, sftp)
    for module in routers:
        app.include_router(module.router)
    docs.install(app)
    openapi.install(app)
    portal.install(app)  # last: every API route, probe and /docs keeps precedence over the static files
    return app
