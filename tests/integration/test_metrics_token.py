"""`/metrics` behind `ZLH_METRICS_TOKEN_FILE`, on the API and on the controller's own app (issue 12, item 10)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.controller_app import create_controller_app
from services.bootstrap import Container
from tests.integration.test_api import assert_problem


@pytest.mark.parametrize("factory", [create_app, create_controller_app], ids=["api", "controller"])
def test_metrics_require_the_token_from_the_file(make_container: Callable[..., Container], tmp_path: Path,
                                                 factory: Callable[[Container], FastAPI]) -> None:
    token_file = tmp_path / "metrics.token"
    token_file.write_text("first-token\n")
    container = make_container(workers=(), metrics_token_file=str(token_file))
    with TestClient(factory(container)) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer first-token-and-more"},
                        {"Authorization": "Basic first-token"}, {"Authorization": "Bearer "},
                        {"Authorization": "Bearer ²".encode("latin-1")}):
            r = client.get("/metrics", headers=headers)
            assert_problem(r, 401, "unauthorized")
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert "first-token" not in r.text
        ok = client.get("/metrics", headers={"Authorization": "Bearer first-token"})
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")
        assert "zlh_" in ok.text
        # Read at every scrape: a rotation takes effect without a restart.
        token_file.write_text("second-token")
        assert_problem(client.get("/metrics", headers={"Authorization": "Bearer first-token"}), 401, "unauthorized")
        assert client.get("/metrics", headers={"Authorization": "bearer second-token"}).status_code == 200
        # A file that cannot be read (or is empty) refuses every scrape rather than opening the metrics.
        token_file.write_text("")
        assert_problem(client.get("/metrics", headers={"Authorization": "Bearer "}), 401, "unauthorized")
        token_file.unlink()
        assert_problem(client.get("/metrics", headers={"Authorization": "Bearer second-token"}), 401,
                       "unauthorized")


def test_metrics_stay_open_without_the_setting(make_container: Callable[..., Container]) -> None:
    container = make_container(workers=())
    with TestClient(create_app(container)) as client:
        assert client.get("/metrics").status_code == 200
    with TestClient(create_controller_app(container)) as client:
        assert client.get("/metrics").status_code == 200
