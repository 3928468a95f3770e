"""A running control plane in-process: real store (SQLite or PostgreSQL), fake driver, HTTP client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from services.adapters.fake_driver import FakeDriver
from services.adapters.fake_edge import FakeDns, FakeProxy
from services.bootstrap import Container
from services.edge import Edge
from services.infrastructure.database import DatabaseURL
from services.infrastructure.migrations import migrate
from services.settings import Settings
from services.users import ensure_bootstrap_admin

ADMIN_TOKEN = "test-admin-token"


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    """Call `fetch` until `done(result)`, or fail with the last result after `timeout` s."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        result = fetch()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last: {result!r}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def edge() -> Edge:
    """DNS and the proxy in memory, with the same ownership rules as every provider."""
    return Edge(FakeDns(), FakeProxy(), "play.zlh.localhost")


@pytest.fixture
def make_container(database_url: str, tmp_path: Path, driver: FakeDriver,
                   edge: Edge) -> Iterator[Callable[..., Container]]:
    built: list[Container] = []

    def make(workers: tuple[str, ...] = ("projections", "provisioning"), **overrides: Any) -> Container:
        settings = Settings(database_url=database_url, data_dir=str(tmp_path / "data"), **overrides)
        migrate(DatabaseURL.parse(settings.database_url))
        container = Container.build(settings, driver=driver, pool_size=4, edge=edge)
        ensure_bootstrap_admin(container.app, ADMIN_TOKEN)
        container.start(workers)
        built.append(container)
        return container

    yield make
    for container in built:
        container.close()


@pytest.fixture
def container(make_container: Callable[..., Container]) -> Container:
    return make_container()


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin() -> dict[str, str]:
    return auth(ADMIN_TOKEN)


@pytest.fixture
def new_user(client: TestClient) -> Callable[[str], dict[str, str]]:
    from tests.integration.test_api import make_customer

    return lambda email: make_customer(client, email)
