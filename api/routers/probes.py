"""Liveness, readiness and metrics: the only routes outside `/api`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ContainerDep

router = APIRouter(tags=["probes"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(container: ContainerDep) -> JSONResponse:
    try:
        container.app.head()
        container.db.query("SELECT 1 AS ok")
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "event_store": f"{type(exc).__name__}"}, status_code=503)
    body = {"status": "ready", "event_store": "ok"}
    limits = limits_check(container)
    if limits is not None:
        # Informational: a node without kernel limits still serves; it says so instead of pretending.
        body["limits"] = limits
    if container.controller is not None:
        # Informational here: the API and the workers serve whether or not the controller may act.
        body["controller"] = container.controller.status.as_dict()
    return JSONResponse(body)


def limits_check(container: ContainerDep) -> str | None:
    """`enforced: ...` or `not enforced: <reason>`, as the node agent says at start-up; None before this
    process talks to a node (a probe never starts an agent) or when the driver has no agent."""
    from services.stats import limits_status

    driver = container.given_driver
    return None if driver is None else limits_status(driver)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
def metrics(container: ContainerDep, request: Request) -> Response:
    """Prometheus text format; with `ZLH_METRICS_TOKEN_FILE` set, only with that bearer token (else 401)."""
    from api.metrics import refresh_gauges
    from api.metrics_auth import refuse_scrape

    refused = refuse_scrape(container.settings, request)
    if refused is not None:
        return refused
    refresh_gauges(container)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/metrics/instances", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
def instance_metrics(container: ContainerDep, request: Request) -> Response:
    """CPU, memory, disk and players of every running instance, labelled `instance_id`, `kind`, `owner_id` as
    the file_sd targets are; apart from `/metrics`, whose labels never carry ids. The same bearer token."""
    from api.metrics import INSTANCE_REGISTRY, refresh_instance_gauges
    from api.metrics_auth import refuse_scrape

    refused = refuse_scrape(container.settings, request)
    if refused is not None:
        return refused
    refresh_instance_gauges(container)
    return Response(generate_latest(INSTANCE_REGISTRY), media_type=CONTENT_TYPE_LATEST)
