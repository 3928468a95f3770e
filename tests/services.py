"""Real PostgreSQL and Redis for tests: configured, else local, else throwaway servers.

Order, as DEVELOPERS.md asks: `ZLH_TEST_DATABASE_URL` / `ZLH_TEST_REDIS_URL`; else the
local servers at 127.0.0.1:5432 / 6379; else servers started here from local binaries
(`initdb`/`pg_ctl`, `redis-server`). If none works the tests fail loudly: never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout}s")


class ThrowawayServers:
    """Servers this test session started itself; stopped at the end."""

    def __init__(self) -> None:
        self.stops: list = []
        self.root = Path(tempfile.mkdtemp(prefix="zlh-test-servers-"))

    def postgres(self) -> str:
        initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
        if initdb is None:
            raise RuntimeError("no PostgreSQL reachable and no initdb binary to start one")
        bindir = Path(initdb).parent
        data, port = self.root / "pg", _free_port()
        user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if user:
            shutil.chown(self.root, "postgres")
        subprocess.run([*user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True)
        subprocess.run([*user, str(bindir / "pg_ctl"), "-D", str(data), "-o",
                        f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1", "-w", "start"],
                       check=True, capture_output=True)
        self.stops.append(lambda: subprocess.run([*user, str(bindir / "pg_ctl"), "-D", str(data), "-m",
                                                  "immediate", "stop"], capture_output=True))
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("no Redis reachable and no redis-server binary to start one")
        port = _free_port()
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no"], stdout=subprocess.DEVNULL)
        self.stops.append(proc.kill)
        _wait(lambda: _reachable("127.0.0.1", port), 10, "redis-server")
        return f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        for stop in reversed(self.stops):
            stop()
        shutil.rmtree(self.root, ignore_errors=True)


def postgres_admin_url(servers: ThrowawayServers) -> str:
    configured = os.environ.get("ZLH_TEST_DATABASE_URL")
    if configured:
        return configured
    if _reachable("127.0.0.1", 5432):
        return DEFAULT_PG
    return servers.postgres()


def redis_url(servers: ThrowawayServers) -> str:
    configured = os.environ.get("ZLH_TEST_REDIS_URL")
    if configured:
        return configured
    if _reachable("127.0.0.1", 6379):
        return DEFAULT_REDIS
    return servers.redis()


def create_database(admin_url: str) -> tuple[str, str]:
    """A fresh, empty database; returns (its URL, its name)."""
    name = f"zlh_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}", name


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
