"""A real `zlh serve` process on a free port, over SQLite or PostgreSQL, running real servers.

Servers come from the shipped templates, installed into the install cache the whole test run shares
(`tests.real_servers`); the package's first test installs flying-squid and JupyterLab there if a
previous run has not.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.real_servers import cache_env, install

ADMIN_TOKEN = "e2e-admin-token"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One `zlh serve` process; `restart()` stops it and starts it again on the same state."""

    workdir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.workdir / "serve.log", "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port)],
                cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"zlh serve exited: {self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"zlh serve did not become ready: {self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.workdir / "serve.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def client(self, token: str = ADMIN_TOKEN) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@dataclass
class Agent:
    """A real `zlh agent` process with its own secret."""

    url: str
    secret: str
    proc: subprocess.Popen


@pytest.fixture(scope="package", autouse=True)
def shipped_templates_installed() -> None:
    """flying-squid and JupyterLab in the shared cache before any server is created (the first run installs)."""
    install("minecraft")
    install("python")


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    port, secret = free_port(), f"agent-secret-{os.urandom(8).hex()}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ZLH_")}, "PYTHONPATH": str(ROOT),
           "ZLH_DATA_DIR": str(tmp_path / "data"), "ZLH_AGENT_SECRET": secret, **cache_env()}
    with open(tmp_path / "agent.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "api.cli", "agent", "--port", str(port)], cwd=tmp_path,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/v1/health", timeout=1)
            break
        except httpx.HTTPError:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "agent.log").read_text()
            time.sleep(0.1)
    yield Agent(url, secret, proc)
    proc.kill()
    proc.wait()


@pytest.fixture
def serve(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(**extra_env: str) -> Server:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ZLH_")},
            "PYTHONPATH": str(ROOT),
            "ZLH_DATABASE_URL": database_url,
            "ZLH_DATA_DIR": str(tmp_path / "data"),
            "ZLH_BOOTSTRAP_ADMIN_TOKEN": ADMIN_TOKEN,
            "ZLH_REDIS_KEY_PREFIX": f"zlh-test-{uuid.uuid4().hex}",  # tests run in parallel on one Redis
            "ZLH_SFTP_LISTEN": "127.0.0.1:0",  # tests run in parallel: any free port
            **cache_env(),
            **extra_env,
        }
        server = Server(tmp_path, env)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(signal.SIGKILL)
    from services.agent.driver import LocalDriver

    LocalDriver(tmp_path / "data").kill_all()
