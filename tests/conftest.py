"""Shared fixtures: real databases per test on SQLite and PostgreSQL, and containers over them.

`pytest --fast` is the inner loop (`make test-fast`): every test that takes `database_url` runs once, on the
in-memory profile (`memory://`: the library's in-memory event store, in-memory SQLite read models); tests that
need a real database server, a file, a subprocess or a browser (marked `real_services`, or under tests/e2e,
tests/browser) are deselected. `make test` (CI) runs everything on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.services import ThrowawayServers, create_database, drop_database, postgres_admin_url, redis_url

# No per-example deadlines: shared, noisy machines.
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60)
settings.register_profile("dev", deadline=None, max_examples=30)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def servers() -> Iterator[ThrowawayServers]:
    s = ThrowawayServers()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def pg_admin_url(servers: ThrowawayServers) -> str:
    return postgres_admin_url(servers)


@pytest.fixture(scope="session")
def redis_test_url(servers: ThrowawayServers) -> str:
    return redis_url(servers)


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    url, name = create_database(pg_admin_url)
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 API (moto's server mode) on a free loopback port, for the whole run."""
    from tests.s3 import moto_s3

    with moto_s3() as url:
        yield url


@pytest.fixture
def s3_bucket(s3_server: str) -> Any:
    """A fresh bucket on the S3 server (`tests.s3.Bucket`)."""
    from tests.s3 import new_bucket

    return new_bucket(s3_server)


#: Fixtures that bring real services (servers, processes): a test that uses one is not part of --fast.
REAL_FIXTURES = frozenset({"pg_url", "pg_admin_url", "redis_test_url", "servers", "local", "s3_server", "s3_bucket"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fast", action="store_true",
                     help="the inner loop: the in-memory profile only; tests needing real services are deselected")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    chosen = any("database_url" in m.args[0] for m in metafunc.definition.iter_markers("parametrize"))
    if "database_url" in metafunc.fixturenames and not chosen:  # a test may name its databases itself
        profiles = ["memory"] if metafunc.config.getoption("fast") else ["sqlite", "postgres"]
        metafunc.parametrize("database_url", profiles, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("fast"):
        return
    slow_dirs = ("tests/e2e/", "tests/browser/")
    keep, drop = [], []
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        slow = (item.get_closest_marker("real_services") is not None or item.get_closest_marker("netns") is not None
                or any(d in item.nodeid for d in slow_dirs)
                or bool(fixtures & REAL_FIXTURES) or params.get("backend") in ("local", "agent"))
        (drop if slow else keep).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test using this runs once on SQLite and once on PostgreSQL (with --fast: once, in memory)."""
    if request.param == "memory":
        from services.infrastructure.database import drop_memory_database

        name = f"{request.node.name}-{id(request)}"
        yield f"memory://{name}"
        drop_memory_database(name)
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/zlh.sqlite3"
    else:
        yield request.getfixturevalue("pg_url")
