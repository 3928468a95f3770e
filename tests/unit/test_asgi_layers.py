"""The API's ASGI layers on a bare app: browser headers even on a 500, body limits per route, problem JSON."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from api import problems
from api.limits import BodyLimit, describe
from api.security import SECURITY_HEADERS, SecurityHeaders
from tests import asgi

KiB = 1024


def bare_app(max_body: int = 4 * KiB) -> FastAPI:
    app = FastAPI()
    problems.install(app)
    app.add_middleware(BodyLimit, max_body=max_body)
    app.add_middleware(SecurityHeaders)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("unexpected")

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.post("/api/billing/stripe/webhook")
    async def webhook(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    return app


def test_a_500_carries_the_browser_headers_and_problem_json() -> None:
    with TestClient(bare_app(), raise_server_exceptions=False) as client:
        r = client.get("/boom")
    assert r.status_code == 500 and r.json()["code"] == "internal"
    assert r.headers["content-type"] == "application/problem+json"
    for name, value in SECURITY_HEADERS.items():
        assert r.headers[name] == value


def test_limits_per_route_by_declared_length_and_by_counting() -> None:
    app = bare_app()
    with TestClient(app) as client:
        assert client.post("/echo", content=b"x" * 4 * KiB).json() == {"size": 4 * KiB}
        r = client.post("/echo", content=b"x" * (4 * KiB + 1))
        assert r.status_code == 413 and r.json()["code"] == "too_large" and "4 KiB" in r.json()["detail"]
        assert client.post("/api/billing/stripe/webhook", content=b"x" * 512 * KiB).json() == {"size": 512 * KiB}
    declared = asgi.request(app, "POST", "/echo", {"content-length": str(5 * KiB)}, asgi.megabytes(5 * KiB, 1024))
    assert declared.status == 413 and declared.bytes_read == 0
    counted = asgi.request(app, "POST", "/echo", {}, asgi.megabytes(64 * KiB, 1024))
    assert counted.status == 413 and counted.bytes_read == 5 * KiB  # stopped at the first chunk past 4 KiB
    assert counted.headers["connection"] == "close"
    assert counted.headers["x-content-type-options"] == "nosniff"
    fits = asgi.request(app, "POST", "/echo", {}, asgi.megabytes(3 * KiB, 1024))
    assert fits.status == 200 and fits.json() == {"size": 3 * KiB}


def test_sizes_are_described_for_people() -> None:
    assert [describe(n) for n in (1024 * 1024, 8 * 1024 * 1024, 512 * KiB, 1000)] == [
        "1 MiB", "8 MiB", "512 KiB", "1000 bytes"]
