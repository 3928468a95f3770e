"""Shared fixtures: real databases per test on SQLite and PostgreSQL, and containers over them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/zlh.sqlite3"
    else:
        yield request.getfixturevalue("pg_url")
