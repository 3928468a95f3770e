"""Versioned migrations: a database made by the previous release is upgraded, each step runs once, read models
whose version changed are rebuilt.

tests/fixtures/previous_release/ holds dumps (sqlite3 .dump, pg_dump --inserts) of databases that the last
released version (commit 3597e94) made: a customer with a token, a game server being created, a ticket and a
note, every read model caught up. They stand for a production database on the day this version is deployed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from domain.note import Note
from projections.instances import InstancesProjection
from services.audit import verify_all, verify_stream
from services.bootstrap import Container
from services.infrastructure.database import DatabaseURL, ReadModelDB
from services.infrastructure.migrations import MIGRATIONS, STEPS, applied_steps, migrate
from services.infrastructure.store import ZLH, store_env
from services.settings import Settings
from tests.integration.conftest import auth

pytestmark = pytest.mark.real_services  # upgrades real SQLite and PostgreSQL databases

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "previous_release"
#: What the previous release's fixtures hold (the tokens were printed when the dumps were made).
TOKENS = {"sqlite": "zlh_CemoxXq1H8SLkAsTeaeqwntlfTRd9FJ9g6td419_VyA",
          "postgres": "zlh_1qX2wojeAe62nahl8Tdv5dP9k8mUV1K-23Lm2XBFuuM"}
INSTANCE = "55dddd25-424d-53c6-805f-3d84a281fec6"
TICKET_NUMBER = "ZLH-20261201-0001"


def load_previous_release(url: DatabaseURL) -> None:
    if url.dialect == "sqlite":
        Path(url.path).parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(url.path) as conn:
            conn.executescript((FIXTURES / "sqlite.sql").read_text())
        return
    with psycopg.connect(url.conninfo(), autocommit=True) as conn:
        conn.execute((FIXTURES / "postgres.sql").read_text())  # type: ignore[arg-type]
        conn.execute("SELECT pg_catalog.set_config('search_path', 'public', false)")


def test_a_database_made_by_the_previous_release_is_upgraded(database_url: str, tmp_path: Path) -> None:
    url = DatabaseURL.parse(database_url)
    load_previous_release(url)
    done = migrate(url)
    assert [line for line in done if line.startswith("step")] == [f"step {v}: {n}" for v, n, _ in STEPS]
    assert "read model instances: rebuilt (version None -> 1)" in done  # tables there, version unknown: rebuilt
    assert migrate(url) == []  # nothing twice

    settings = Settings(database_url=database_url, data_dir=str(tmp_path / "data"))
    container = Container.build(settings, pool_size=2)
    container.start(("projections",))
    try:
        with TestClient(create_app(container)) as client:
            me = auth(TOKENS[url.dialect])
            assert client.get("/api/me", headers=me).json()["email"] == "previous@example.com"
            [instance] = client.get("/api/instances", headers=me).json()["items"]
            assert instance["id"] == INSTANCE and instance["name"] == "survival"
            assert instance["pending_operation"]["kind"] == "create"
            assert [t["number"] for t in client.get("/api/support/tickets", headers=me).json()["items"]] == [
                TICKET_NUMBER]
            assert client.get("/api/notes", headers=me).json() == {"content": "remember", "version": 1}
            # The old chains verify, and what this version appends is chained by the database.
            assert all(result.ok for result in verify_all(container.app))
            r = client.put("/api/notes", json={"content": "after the upgrade"}, headers={**me, "If-Match": "1"})
            assert r.status_code == 200
            note = next(e for e in container.app.notification_log.select(1, 1000) if e.topic == Note.Saved.TOPIC)
            assert verify_stream(container.app, note.originator_id).ok
    finally:
        container.close()


def test_every_step_runs_once_in_order_and_is_recorded(database_url: str) -> None:
    url = DatabaseURL.parse(database_url)
    assert [line for line in migrate(url) if line.startswith("step")] == [f"step {v}: {n}" for v, n, _ in STEPS]
    assert migrate(url) == []
    db = ReadModelDB(url, pool_size=1)
    try:
        assert applied_steps(db) == [v for v, _, _ in STEPS]
        assert [r["name"] for r in db.query(f"SELECT name FROM {MIGRATIONS} ORDER BY version")] == [
            n for _, n, _ in STEPS]
    finally:
        db.close()
    assert [v for v, _, _ in STEPS] == list(range(1, len(STEPS) + 1))  # numbered without gaps


def test_a_read_model_whose_version_changed_is_rebuilt_and_keeps_its_rows(
        database_url: str, monkeypatch: pytest.MonkeyPatch, make_container: Callable[..., Container]) -> None:
    container = make_container(workers=("projections",))
    with TestClient(create_app(container)) as client:
        r = client.post("/api/admin/users", json={"email": "v@example.com"}, headers=auth("test-admin-token"))
        me = auth(r.json()["token"])
        created = client.post("/api/instances", json={"kind": "game", "name": "v", "template": "minecraft"},
                              headers={**me, "Idempotency-Key": "v"})
        assert created.status_code == 202
    url = DatabaseURL.parse(database_url)
    monkeypatch.setattr(InstancesProjection, "version", 2)
    assert migrate(url) == ["read model instances: rebuilt (version 1 -> 2)"]
    assert migrate(url) == []
    app = ZLH(env=store_env(url))
    db = ReadModelDB(url, pool_size=1)
    try:
        rows = db.query("SELECT id FROM rm_instances")
        assert [UUID(r["id"]) for r in rows] == [UUID(created.json()["instance_id"])]
    finally:
        app.close()
        db.close()


def test_a_fresh_sqlite_database_is_private(tmp_path: Path) -> None:
    url = DatabaseURL.parse(f"sqlite:///{tmp_path}/fresh/zlh.sqlite3")
    migrate(url)
    for path in (tmp_path / "fresh").iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"
