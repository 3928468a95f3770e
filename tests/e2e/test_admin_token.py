"""The admin token of a real `zlh serve`: a generated one shown once and kept in a 0600 file (SQLite files 0600 too),
and a new ZLH_BOOTSTRAP_ADMIN_TOKEN revoking the previous one, also when several processes start at once."""

from __future__ import annotations

import os
import re
import signal
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import ADMIN_TOKEN, ROOT, Server


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def whole_log(workdir: Path) -> str:
    return (workdir / "serve.log").read_text()


@pytest.mark.e2e
def test_a_generated_admin_token_is_shown_once_and_kept_private(database_url: str, tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ZLH_")}, "PYTHONPATH": str(ROOT),
           "ZLH_DATABASE_URL": database_url, "ZLH_DATA_DIR": str(tmp_path / "data")}
    old = os.umask(0o022)  # what the server inherits: with it, files made the usual way would be 0644
    server = Server(tmp_path, env)
    server.start()
    try:
        shown = re.findall(r"Admin token: (zlh_\S+)", whole_log(tmp_path))
        assert len(shown) == 1, whole_log(tmp_path)
        token = shown[0]
        token_file = tmp_path / "data" / "initial-admin-token"
        assert token_file.read_text().strip() == token and mode(token_file) == 0o600
        with server.client(token) as client:
            assert client.get("/api/me").json()["admin"] is True
        if database_url.startswith("sqlite"):
            database = Path(database_url.removeprefix("sqlite:///"))
            files = [p for p in (database, Path(f"{database}-wal"), Path(f"{database}-shm")) if p.exists()]
            assert database in files and all(mode(p) == 0o600 for p in files), {str(p): oct(mode(p)) for p in files}

        server.restart()
        log = whole_log(tmp_path)
        assert log.count(token) == 1  # printed when it was made, never again
        assert f"Admin token: kept in {token_file}" in log
        with server.client(token) as client:
            assert client.get("/api/me").status_code == 200
    finally:
        server.stop(signal.SIGKILL)
        os.umask(old)


@pytest.mark.e2e
def test_a_new_bootstrap_token_revokes_the_previous_one(serve: Callable[..., Server], database_url: str,
                                                        tmp_path: Path) -> None:
    server = serve()
    with server.client() as client:
        assert client.get("/api/me").json()["admin"] is True
    server.stop()
    server.env["ZLH_BOOTSTRAP_ADMIN_TOKEN"] = "rotated-admin-token"
    if database_url.startswith("postgresql"):  # a second API process starting at the same moment
        twin = Server(tmp_path, {**server.env, "ZLH_DATA_DIR": str(tmp_path / "twin")})
        starts = [threading.Thread(target=s.start) for s in (server, twin)]
        for t in starts:
            t.start()
        for t in starts:
            t.join()
    else:
        twin = None
        server.start()
    try:
        assert "the previous bootstrap token is revoked" in whole_log(tmp_path)
        for s in filter(None, (server, twin)):
            with s.client(ADMIN_TOKEN) as old, s.client("rotated-admin-token") as new:
                assert old.get("/api/me").status_code == 401
                assert new.get("/api/me").json()["admin"] is True
        server.restart()  # the same value again: nothing more to do, and it still works
        with server.client(ADMIN_TOKEN) as old, server.client("rotated-admin-token") as new:
            assert old.get("/api/me").status_code == 401 and new.get("/api/me").status_code == 200
            admin_id = new.get("/api/me").json()["id"]
            events = new.get(f"/api/admin/streams/{admin_id}/events").json()["events"]
        assert [e["type"] for e in events].count("zlh.User.BootstrapTokenSet") == 2  # once per value, ever
    finally:
        if twin is not None:
            twin.stop(signal.SIGKILL)
