"""The `zlh controller` process's own HTTP: liveness, readiness and metrics, nothing else.

`/readyz` answers 503 while the controller cannot act: the event store is down or the
leader lock's Redis is unreachable. A follower (another controller leads) is ready.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.bootstrap import Container


def create_controller_app(container: Container) -> FastAPI:
    app = FastAPI(title="ZLH controller", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        controller = container.controller
        status = controller.status.as_dict() if controller else {"state": "stopped"}
        try:
            container.app.head()
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "event_store": type(exc).__name__, "controller": status},
                                status_code=503)
        ready = status["state"] in ("leader", "follower")
        return JSONResponse({"status": "ready" if ready else "unavailable", "event_store": "ok",
                             "controller": status}, status_code=200 if ready else 503)

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        from api.metrics import refresh_controller_gauges
        from api.metrics_auth import refuse_scrape

        refused = refuse_scrape(container.settings, request)
        if refused is not None:
            return refused
        refresh_controller_gauges(container)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
