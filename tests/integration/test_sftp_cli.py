"""`zlh sftp` as its systemd unit runs it: a host key made 0600 on the first start and kept after, a real client
signing in with a password set through the store, SIGTERM ends it cleanly; a port already taken is exit 1."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from domain.instance import Instance
from services.bootstrap import Container
from services.infrastructure.database import DatabaseURL
from services.infrastructure.migrations import migrate
from services.settings import Settings
from services.sftp import set_sftp_password
from services.users import create_user

pytestmark = pytest.mark.real_services  # runs `zlh sftp` as a subprocess on real databases

ROOT = Path(__file__).resolve().parents[2]


def start(env: dict[str, str], tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "sftp", *args], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        match = re.search(r"zlh sftp listening on [^:]+:(\d+)", line)
        if match:
            return proc, int(match.group(1))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"zlh sftp did not start: {''.join(seen)}")


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.stderr is not None:
            proc.stderr.close()


def test_zlh_sftp_serves_with_a_host_key_of_its_own(database_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=database_url, data_dir=str(tmp_path / "data"))
    migrate(DatabaseURL.parse(database_url))
    container = Container.build(settings, pool_size=2)
    container.start(("projections",))
    try:
        owner = create_user(container.app, "ops@example.com", False).principal
        instance = Instance(owner_id=owner.id, kind="game", name="lobby", template="minecraft",
                            edge_name="lobby-x", operation_id=owner.id)
        container.app.save(instance)
        password = set_sftp_password(container.app, owner.id, owner.id, instance.id)
        assert container.wait_for_projections(container.app.head(), ("instances",), timeout=30)
    finally:
        container.close()
    key_file = tmp_path / "host_key"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ZLH_")}, "PYTHONPATH": str(ROOT),
           "ZLH_DATABASE_URL": database_url, "ZLH_DATA_DIR": str(tmp_path / "data"),
           "ZLH_SFTP_HOST_KEY": str(key_file)}
    proc, port = start(env, tmp_path, "--listen", "127.0.0.1:0")
    try:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        first_key = key_file.read_text()
        transport = paramiko.Transport(("127.0.0.1", port))
        try:
            transport.connect(username=f"ops@example.com.{instance.id.hex[:8]}", password=password)
            assert transport.is_authenticated()
            host_key = transport.get_remote_server_key().get_name()
        finally:
            transport.close()
        assert host_key == "ssh-ed25519"
        with socket.create_server(("127.0.0.1", 0)) as taken:
            busy = subprocess.run([sys.executable, "-m", "api.cli", "sftp", "--listen",
                                   f"127.0.0.1:{taken.getsockname()[1]}"], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=120)
        assert busy.returncode == 1 and "cannot listen" in busy.stderr
    finally:
        assert stop(proc) == 0
    proc, _port = start(env, tmp_path, "--listen", "127.0.0.1:0")
    assert stop(proc) == 0
    assert key_file.read_text() == first_key  # kept across restarts
