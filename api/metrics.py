"""Prometheus metrics: HTTP requests by route template, and the log's positions and lag."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import Counter, Gauge, Histogram

from services.container import Container

REQUESTS = Counter("zlh_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("zlh_http_request_duration_seconds", "HTTP request latency", ["method", "route"])
HEAD = Gauge("zlh_log_head_position", "The newest notification id in the log")
POSITION = Gauge("zlh_consumer_position", "A projection's or process manager's log position", ["consumer"])
LAG = Gauge("zlh_consumer_lag_events", "Events between the log head and a consumer", ["consumer"])


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def _measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        LATENCY.labels(request.method, template).observe(time.perf_counter() - started)
        REQUESTS.labels(request.method, template, str(response.status_code)).inc()
        return response


def refresh_gauges(container: Container) -> None:
    from projections.runner import read_positions

    head = container.app.head()
    HEAD.set(head)
    for name, position in read_positions(container.db).items():
        if name.endswith("__shadow"):
            continue
        POSITION.labels(name).set(position)
        LAG.labels(name).set(max(head - position, 0))
