"""The `zlh` command line as operators use it: real subprocesses on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from domain.ids import credential_id
from projections.registry import all_projections
from services.users import hash_token

pytestmark = pytest.mark.real_services  # runs the zlh command as subprocesses on real databases

ROOT = Path(__file__).resolve().parents[2]


def zlh(env_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ZLH_")}, "PYTHONPATH": str(ROOT),
           "ZLH_DATABASE_URL": env_url, "ZLH_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_users_projections_and_audit(database_url: str, tmp_path: Path) -> None:
    assert zlh(database_url, tmp_path, "migrate").returncode == 0
    created = zlh(database_url, tmp_path, "users", "create", "Ops@Example.com", "--admin")
    assert created.returncode == 0, created.stderr
    user = json.loads(created.stdout)
    assert set(user) == {"id", "email", "admin", "token"}
    assert user["email"] == "ops@example.com" and user["admin"] is True and user["token"].startswith("zlh_")
    again = zlh(database_url, tmp_path, "users", "create", "ops@example.com")
    assert again.returncode == 1 and "already exists" in again.stderr

    stream = zlh(database_url, tmp_path, "audit", "stream", user["id"])
    assert stream.returncode == 0, stream.stderr
    events = [json.loads(line) for line in stream.stdout.splitlines()]
    assert [(e["type"], e["version"]) for e in events] == [("zlh.User.Registered", 1)]
    credential = zlh(database_url, tmp_path, "audit", "stream", str(credential_id(hash_token(user["token"]))))
    assert [json.loads(line)["type"] for line in credential.stdout.splitlines()] == ["zlh.Credential.Issued"]
    assert user["token"] not in stream.stdout + credential.stdout  # only the hash is stored
    assert zlh(database_url, tmp_path, "audit", "stream", "not-a-uuid").returncode == 2
    assert zlh(database_url, tmp_path, "audit", "stream", "00000000-0000-0000-0000-000000000000").returncode == 1

    status = [json.loads(line) for line in zlh(database_url, tmp_path, "projections", "status").stdout.splitlines()]
    assert {s["name"] for s in status} == {p.name for p in all_projections()}
    rebuilt = zlh(database_url, tmp_path, "projections", "rebuild", "--all")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert [json.loads(line)["state"] for line in rebuilt.stdout.splitlines()] == ["done"] * len(all_projections())
    assert zlh(database_url, tmp_path, "projections", "rebuild", "nope").returncode == 2
    assert zlh(database_url, tmp_path, "worker", "nope").returncode == 2


@pytest.mark.postgres
def test_concurrent_migrations_on_a_fresh_database(pg_url: str, tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ZLH_")}, "PYTHONPATH": str(ROOT),
           "ZLH_DATABASE_URL": pg_url}
    procs = [subprocess.Popen([sys.executable, "-m", "api.cli", "migrate"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    results = [(p.communicate(timeout=120)[1], p.returncode) for p in procs]
    results = [(code, err) for err, code in results]
    assert [code for code, _ in results] == [0] * 8, results


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    result = zlh("sqlite:///x.db", tmp_path, "migrate")
    assert result.returncode == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZLH_LOCAL_STEP_DELAY": "soon"}
    bad = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "bad configuration" in bad.stderr
