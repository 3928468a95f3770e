"""The `InstanceDriver` contract, run against `FakeDriver`, `LocalDriver` and `AgentDriver` alike.

`AgentDriver` runs against a node agent started in a thread over a `LocalDriver`
on `tmp_path`, with a fresh random secret. The local-only tests at the end
exercise the real stand-in processes and edge files. Every spawned process is
killed in teardown, and teardown checks none survived.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import signal
import socket
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from services.adapters.agent_client import AgentDriver
from services.adapters.fake_driver import FakeDriver
from services.agent.driver import LocalDriver
from services.agent.server import start_agent_in_thread
from services.ports import DriverError, InstanceSpec

ZONE = "play.zlh.localhost"
#: A small write limit keeps the too-large test light.
WRITE_LIMIT = 64 * 1024
Driver = FakeDriver | LocalDriver | AgentDriver


def make_spec(kind: str = "game", name: str = "alpha") -> InstanceSpec:
    instance_id = uuid4()
    template = "minecraft" if kind == "game" else "python"
    return InstanceSpec(
        instance_id=instance_id, kind=kind, template=template, edge_name=f"{name}-{instance_id.hex[:8]}"
    )


def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def standins_under(root: Path) -> list[int]:
    """Pids of live (non-zombie) processes whose command line mentions `root`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if str(root).encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def local_driver(data_dir: Path) -> Iterator[LocalDriver]:
    """A `LocalDriver` on `data_dir`; on exit every stand-in it started is killed, and checked gone."""
    driver = LocalDriver(data_dir, max_write_bytes=WRITE_LIMIT)
    try:
        yield driver
    finally:
        driver.kill_all()
        eventually(lambda: not standins_under(data_dir.resolve()), what="stand-ins to be gone")


@dataclass
class Backend:
    """A driver under test, and the `LocalDriver` holding its node's files (None for the fake)."""

    driver: Driver
    node: LocalDriver | None


@pytest.fixture(params=["fake", "local", "agent"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "fake":
        yield Backend(FakeDriver(max_write_bytes=WRITE_LIMIT), None)
    elif request.param == "local":
        with local_driver(tmp_path / "data") as local:
            yield Backend(local, local)
    else:
        with local_driver(tmp_path / "node") as node:
            secret = secrets.token_urlsafe(32)
            url, stop = start_agent_in_thread(node, secret)
            agent = AgentDriver(url, secret)
            try:
                yield Backend(agent, node)
            finally:
                agent.close()
                stop()


@pytest.fixture
def driver(backend: Backend) -> Driver:
    return backend.driver


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalDriver]:
    with local_driver(tmp_path / "data") as driver:
        yield driver


def provision(driver: Driver, spec: InstanceSpec) -> tuple[int, int]:
    """The provisioning steps up to a connectable process; returns (port, pid)."""
    port = driver.allocate_port(spec)
    driver.create_directory(spec)
    pid = driver.start_process(spec, port)
    driver.wait_connectable(spec, port, timeout=15.0)
    return port, pid


# -- the contract, every driver -----------------------------------------------------------------


def test_allocate_port_is_idempotent_and_distinct(driver: Driver) -> None:
    a, b = make_spec(), make_spec()
    port = driver.allocate_port(a)
    assert 0 < port < 65536
    assert driver.allocate_port(a) == port
    assert driver.allocate_port(b) != port


def test_create_directory_is_idempotent(driver: Driver) -> None:
    spec = make_spec()
    path = driver.create_directory(spec)
    assert driver.create_directory(spec) == path


@pytest.mark.parametrize("kind", ["game", "dev"])
def test_start_then_connectable_then_running(driver: Driver, kind: str) -> None:
    spec = make_spec(kind)
    port = driver.allocate_port(spec)
    driver.create_directory(spec)
    assert not driver.is_running(spec, port)
    pid = driver.start_process(spec, port)
    assert pid > 0
    driver.wait_connectable(spec, port, timeout=15.0)
    assert driver.is_running(spec, port)
    expected = f"http://127.0.0.1:{port}/" if kind == "dev" else f"127.0.0.1:{port}"
    assert driver.address(spec, port) == expected


def test_start_twice_returns_the_same_pid(driver: Driver) -> None:
    spec = make_spec()
    port, pid = provision(driver, spec)
    assert driver.start_process(spec, port) == pid
    driver.wait_connectable(spec, port, timeout=15.0)
    assert driver.is_running(spec, port)


def test_wait_connectable_fails_when_nothing_was_started(driver: Driver) -> None:
    spec = make_spec()
    port = driver.allocate_port(spec)
    driver.create_directory(spec)
    with pytest.raises(DriverError) as info:
        driver.wait_connectable(spec, port, timeout=2.0)
    assert info.value.code == "process_exited"










@pytest.mark.parametrize("kind", ["game", "dev"])
def test_stop_makes_is_running_false_and_is_idempotent(driver: Driver, kind: str) -> None:
    spec = make_spec(kind)
    port, _pid = provision(driver, spec)
    driver.stop_process(spec)
    assert not driver.is_running(spec, port)
    driver.stop_process(spec)
    assert not driver.is_running(spec, port)
    with pytest.raises(DriverError) as info:
        driver.wait_connectable(spec, port, timeout=2.0)
    assert info.value.code == "process_exited"


def test_start_after_stop_runs_again(driver: Driver) -> None:
    spec = make_spec()
    port, _pid = provision(driver, spec)
    driver.stop_process(spec)
    driver.start_process(spec, port)
    driver.wait_connectable(spec, port, timeout=15.0)
    assert driver.is_running(spec, port)


def test_remove_directory_refuses_while_running(driver: Driver) -> None:
    spec = make_spec()
    provision(driver, spec)
    with pytest.raises(DriverError) as info:
        driver.remove_directory(spec)
    assert info.value.code == "still_running"


def test_removing_twice_is_fine(driver: Driver) -> None:
    spec = make_spec()
    port, _pid = provision(driver, spec)
    for _ in range(2):
        driver.stop_process(spec)
        driver.remove_directory(spec)
    assert not driver.is_running(spec, port)


def test_send_console_to_a_stopped_instance_is_not_running(driver: Driver) -> None:
    spec = make_spec()
    driver.create_directory(spec)
    with pytest.raises(DriverError) as info:
        driver.send_console(spec, "say hi")
    assert info.value.code == "not_running"


def test_console_stop_stops_the_instance(driver: Driver) -> None:
    spec = make_spec()
    port, _pid = provision(driver, spec)
    driver.send_console(spec, "stop")
    eventually(lambda: not driver.is_running(spec, port), what="the instance to stop")


def test_say_appears_in_console_log(driver: Driver) -> None:
    spec = make_spec()
    provision(driver, spec)
    driver.send_console(spec, "say hello")
    driver.send_console(spec, "frobnicate")
    eventually(lambda: "[server] hello\n" in driver.console_log(spec), what="the say line")
    eventually(lambda: "[server] unknown command: frobnicate" in driver.console_log(spec), what="unknown")


def test_console_rejects_multi_line_commands(driver: Driver) -> None:
    spec = make_spec()
    provision(driver, spec)
    with pytest.raises(DriverError) as info:
        driver.send_console(spec, "say a\nstop")
    assert info.value.code == "bad_command"


# -- files ---------------------------------------------------------------------------------------


def test_files_write_read_list(driver: Driver) -> None:
    spec = make_spec()
    driver.create_directory(spec)
    assert driver.list_files(spec, "/") == []
    driver.write_file(spec, "/config/app.yml", b"a: 1\n")
    driver.write_file(spec, "notes.txt", b"\x00\xffbinary")
    assert driver.read_file(spec, "config/app.yml") == b"a: 1\n"
    assert driver.read_file(spec, "/notes.txt") == b"\x00\xffbinary"
    assert driver.list_files(spec, "/") == [
        {"name": "config", "type": "dir", "size": 0},
        {"name": "notes.txt", "type": "file", "size": 8},
    ]
    assert driver.list_files(spec, "/config/") == [{"name": "app.yml", "type": "file", "size": 5}]
    driver.write_file(spec, "notes.txt", b"v2")
    driver.write_file(spec, "/empty", b"")
    assert driver.read_file(spec, "notes.txt") == b"v2"
    assert driver.read_file(spec, "./empty") == b""


def test_a_game_server_writes_default_properties_once(driver: Driver) -> None:
    spec = make_spec()
    port, _pid = provision(driver, spec)
    assert b"motd=" in driver.read_file(spec, "/server.properties")
    driver.write_file(spec, "/server.properties", b"motd=mine\n")
    driver.stop_process(spec)
    driver.start_process(spec, port)
    driver.wait_connectable(spec, port, timeout=15.0)
    assert driver.read_file(spec, "/server.properties") == b"motd=mine\n"


def test_file_errors(driver: Driver) -> None:
    spec = make_spec()
    with pytest.raises(DriverError) as info:
        driver.list_files(spec, "/")
    assert info.value.code == "not_found"  # no directory yet
    driver.create_directory(spec)
    driver.write_file(spec, "dir/file.txt", b"x")
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: driver.read_file(spec, "missing.txt"), "not_found"),
        (lambda: driver.list_files(spec, "/missing"), "not_found"),
        (lambda: driver.read_file(spec, "/dir"), "is_a_directory"),
        (lambda: driver.read_file(spec, "/"), "is_a_directory"),
        (lambda: driver.write_file(spec, "/", b"x"), "is_a_directory"),
        (lambda: driver.write_file(spec, "dir", b"x"), "is_a_directory"),
        (lambda: driver.list_files(spec, "dir/file.txt"), "not_a_directory"),
        (lambda: driver.write_file(spec, "dir/file.txt/sub", b"x"), "not_a_directory"),
    ]
    for call, code in cases:
        with pytest.raises(DriverError) as info:
            call()
        assert info.value.code == code
    assert driver.read_file(spec, "dir/file.txt") == b"x"


@pytest.mark.parametrize("path", ["../x", "/../../etc/passwd", "a/../../x", "dir/../x", "..", "a\0b"])
def test_paths_escaping_the_root_are_bad_path(backend: Backend, path: str) -> None:
    driver = backend.driver
    spec = make_spec()
    driver.create_directory(spec)
    driver.write_file(spec, "dir/x", b"inside")
    for call in (
        lambda: driver.list_files(spec, path),
        lambda: driver.read_file(spec, path),
        lambda: driver.write_file(spec, path, b"pwned"),
    ):
        with pytest.raises(DriverError) as info:
            call()
        assert info.value.code == "bad_path"
    if backend.node is not None:
        root = backend.node.instance_dir(spec)
        assert not (root.parent / "x").exists()
        assert not (root.parent.parent / "x").exists()


def test_a_leading_slash_means_the_instance_root(driver: Driver) -> None:
    spec = make_spec()
    driver.create_directory(spec)
    driver.write_file(spec, "/etc/passwd", b"not the host's")
    assert driver.read_file(spec, "etc/passwd") == b"not the host's"
    assert driver.list_files(spec, "//etc") == [{"name": "passwd", "type": "file", "size": 14}]


@pytest.mark.parametrize("backend", ["local", "agent"], indirect=True)  # the fake has no symlinks
def test_symlinks_leading_outside_are_bad_path(backend: Backend, tmp_path: Path) -> None:
    assert backend.node is not None
    driver = backend.driver
    spec = make_spec()
    driver.create_directory(spec)
    root = backend.node.instance_dir(spec)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"host secret")
    (root / "abs-dir").symlink_to(outside)  # absolute target, a directory
    (root / "abs-file").symlink_to(outside / "secret.txt")  # absolute target, a file
    (root / "rel-dir").symlink_to(os.path.relpath(outside, root))  # relative target
    (root / "dangling").symlink_to(outside / "not-yet.txt")
    (root / "inside").symlink_to("real")  # stays inside: fine
    driver.write_file(spec, "real/ok.txt", b"ok")
    for path in ("abs-dir", "abs-dir/secret.txt", "abs-file", "rel-dir/secret.txt", "rel-dir", "dangling"):
        for call in (
            lambda p=path: driver.read_file(spec, p),
            lambda p=path: driver.list_files(spec, p),
            lambda p=path: driver.write_file(spec, p, b"pwned"),
            lambda p=path: driver.write_file(spec, f"{p}/new.txt", b"pwned"),
        ):
            with pytest.raises(DriverError) as info:
                call()
            assert info.value.code == "bad_path", path
    assert (outside / "secret.txt").read_bytes() == b"host secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert driver.read_file(spec, "inside/ok.txt") == b"ok"
    listing = {e["name"]: e["type"] for e in driver.list_files(spec, "/")}
    assert listing["inside"] == "dir"
    assert listing["abs-dir"] == "file"  # shown, but not followed outside


def test_a_write_above_the_limit_is_too_large(backend: Backend) -> None:
    driver = backend.driver
    spec = make_spec()
    driver.create_directory(spec)
    driver.write_file(spec, "max.bin", b"m" * WRITE_LIMIT)
    with pytest.raises(DriverError) as info:
        driver.write_file(spec, "big.bin", b"b" * (WRITE_LIMIT + 1))
    assert info.value.code == "too_large"
    with pytest.raises(DriverError) as info:
        driver.read_file(spec, "big.bin")
    assert info.value.code == "not_found"
    assert [e["name"] for e in driver.list_files(spec, "/")] == ["max.bin"]
    if backend.node is not None:
        assert not list(backend.node.instance_dir(spec).glob(".*"))  # no temp file left behind


# -- backups -------------------------------------------------------------------------------------


def _files_with_history(driver: Driver) -> InstanceSpec:
    spec = make_spec()
    driver.create_directory(spec)
    driver.write_file(spec, "world/level.dat", b"original level")
    driver.write_file(spec, "server.properties", b"motd=before\n")
    return spec


def test_backup_then_restore_brings_the_files_back(driver: Driver) -> None:
    spec = _files_with_history(driver)
    backup_id = uuid4()
    manifest = driver.create_backup(spec, backup_id)
    assert set(manifest) >= {"size", "sha256", "created_at", "path"}
    assert manifest["size"] > 0
    assert len(manifest["sha256"]) == 64 and int(manifest["sha256"], 16) >= 0
    assert manifest["created_at"].endswith("Z")
    assert manifest["path"].endswith(f"{backup_id}.tar.gz")
    assert driver.create_backup(spec, backup_id) == manifest  # idempotent

    driver.write_file(spec, "world/level.dat", b"griefed")
    driver.write_file(spec, "new.txt", b"added later")
    driver.restore_backup(spec, backup_id, manifest["sha256"])
    assert driver.read_file(spec, "world/level.dat") == b"original level"
    assert driver.read_file(spec, "server.properties") == b"motd=before\n"
    with pytest.raises(DriverError) as info:
        driver.read_file(spec, "new.txt")
    assert info.value.code == "not_found"
    driver.restore_backup(spec, backup_id, manifest["sha256"])  # again: same result
    assert [e["name"] for e in driver.list_files(spec, "/")] == ["world", "server.properties"]


def test_restore_with_a_wrong_checksum_leaves_the_files_untouched(driver: Driver) -> None:
    spec = _files_with_history(driver)
    backup_id = uuid4()
    manifest = driver.create_backup(spec, backup_id)
    driver.write_file(spec, "world/level.dat", b"changed")
    wrong = hashlib.sha256(b"something else").hexdigest()
    assert wrong != manifest["sha256"]
    with pytest.raises(DriverError) as info:
        driver.restore_backup(spec, backup_id, wrong)
    assert info.value.code == "checksum_mismatch"
    assert driver.read_file(spec, "world/level.dat") == b"changed"


def test_restore_while_running_is_refused(driver: Driver) -> None:
    spec = make_spec()
    provision(driver, spec)
    driver.write_file(spec, "a.txt", b"one")
    backup_id = uuid4()
    manifest = driver.create_backup(spec, backup_id)
    driver.write_file(spec, "a.txt", b"two")
    with pytest.raises(DriverError) as info:
        driver.restore_backup(spec, backup_id, manifest["sha256"])
    assert info.value.code == "still_running"
    assert driver.read_file(spec, "a.txt") == b"two"


def test_deleted_or_unknown_backups_are_not_found(driver: Driver) -> None:
    spec = _files_with_history(driver)
    backup_id = uuid4()
    manifest = driver.create_backup(spec, backup_id)
    driver.delete_backup(backup_id)
    driver.delete_backup(backup_id)  # idempotent
    driver.delete_backup(uuid4())
    for bid in (backup_id, uuid4()):
        with pytest.raises(DriverError) as info:
            driver.restore_backup(spec, bid, manifest["sha256"])
        assert info.value.code == "not_found"
    assert driver.read_file(spec, "world/level.dat") == b"original level"


def test_backup_of_an_instance_without_files_is_not_found(driver: Driver) -> None:
    with pytest.raises(DriverError) as info:
        driver.create_backup(make_spec(), uuid4())
    assert info.value.code == "not_found"


# -- FakeDriver specifics ------------------------------------------------------------------------


def test_fake_records_calls_and_injects_failures() -> None:
    fake = FakeDriver()
    spec = make_spec()
    fake.fail_on["start_process"] = DriverError("spawn_failed", "injected")
    port = fake.allocate_port(spec)
    assert port == 30000
    with pytest.raises(DriverError) as info:
        fake.start_process(spec, port)
    assert info.value.code == "spawn_failed"
    del fake.fail_on["start_process"]
    fake.start_process(spec, port)
    assert fake.calls == [
        ("allocate_port", spec.instance_id),
        ("start_process", spec.instance_id),
        ("start_process", spec.instance_id),
    ]
    fake.crash(spec.instance_id)
    assert not fake.is_running(spec, port)


# -- LocalDriver: real processes and files -------------------------------------------------------


def test_game_standin_greets_and_logs_connections(local: LocalDriver) -> None:
    spec = make_spec()
    port, _pid = provision(local, spec)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(5)
        assert s.recv(100).startswith(b"ZLH")
        local_port = s.getsockname()[1]
    eventually(
        lambda: f"connection from 127.0.0.1:{local_port}" in local.console_log(spec),
        what="the connection in console.log",
    )


def test_dev_answers_http_200(local: LocalDriver) -> None:
    spec = make_spec("dev")
    port, _pid = provision(local, spec)
    with urllib.request.urlopen(local.address(spec, port), timeout=5) as response:
        assert response.status == 200
        assert "ZLH IDE (stand-in)" in response.read().decode()


def test_standin_runs_in_its_own_session_with_runtime_files_out_of_the_files_root(local: LocalDriver) -> None:
    spec = make_spec()
    _port, pid = provision(local, spec)
    assert os.getsid(pid) == pid
    d = Path(local.create_directory(spec))
    assert d == local.data_dir / "instances" / str(spec.instance_id)
    rt = local.data_dir / "runtime" / str(spec.instance_id)
    assert local.runtime_dir(spec) == rt
    assert (rt / "server.pid").read_text().strip() == str(pid)
    assert (rt / "console.in").exists()
    assert {p.name for p in rt.iterdir()} >= {"port", "server.pid", "console.log", "console.in", "standin.log"}
    assert sorted(p.name for p in d.iterdir()) == ["server.properties"]
    assert [e["name"] for e in local.list_files(spec, "/")] == ["server.properties"]


def test_stop_removes_the_pid_file(local: LocalDriver) -> None:
    spec = make_spec()
    provision(local, spec)
    pid_file = local.runtime_dir(spec) / "server.pid"
    local.stop_process(spec)
    assert not pid_file.exists()
    assert "[server] stopping" in local.console_log(spec)


def test_sigterm_exits_cleanly(local: LocalDriver) -> None:
    spec = make_spec("dev")
    port, pid = provision(local, spec)
    os.kill(pid, signal.SIGTERM)
    pid_file = local.runtime_dir(spec) / "server.pid"
    eventually(lambda: not pid_file.exists(), what="the pid file to be removed")
    eventually(lambda: not local.is_running(spec, port), what="the process to exit")


def test_a_new_driver_finds_a_running_standin(local: LocalDriver) -> None:
    spec = make_spec()
    port, pid = provision(local, spec)
    again = LocalDriver(local.data_dir)
    assert again.allocate_port(spec) == port
    assert again.start_process(spec, port) == pid
    assert again.is_running(spec, port)


def test_start_on_another_port_replaces_the_process(local: LocalDriver) -> None:
    spec = make_spec()
    port, pid = provision(local, spec)
    other = local.allocate_port(make_spec())
    new_pid = local.start_process(spec, other)
    assert new_pid != pid
    local.wait_connectable(spec, other, timeout=15.0)
    assert local.is_running(spec, other)
    assert not local.is_running(spec, port)


def test_wait_connectable_fails_fast_when_the_port_is_taken(local: LocalDriver) -> None:
    spec = make_spec()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        local.create_directory(spec)
        local.start_process(spec, port)
        started = time.monotonic()
        with pytest.raises(DriverError) as info:
            local.wait_connectable(spec, port, timeout=30.0)
    assert info.value.code == "process_exited"
    assert time.monotonic() - started < 15.0
    assert "cannot listen" in info.value.message


def test_a_stale_pid_file_is_ignored(local: LocalDriver) -> None:
    spec = make_spec()
    port = local.allocate_port(spec)
    local.create_directory(spec)
    (local.runtime_dir(spec) / "server.pid").write_text(f"{os.getpid()}\n")  # alive, but not a stand-in
    assert not local.is_running(spec, port)
    pid = local.start_process(spec, port)
    assert pid != os.getpid()
    local.wait_connectable(spec, port, timeout=15.0)


def test_not_connectable_after_timeout(local: LocalDriver) -> None:
    spec = make_spec()
    port = local.allocate_port(spec)
    local.create_directory(spec)
    local.start_process(spec, port)
    with socket.socket() as closed:  # bound, not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        with pytest.raises(DriverError) as info:
            local.wait_connectable(spec, closed.getsockname()[1], timeout=0.3)
    assert info.value.code == "not_connectable"










def test_concurrent_starts_spawn_one_process(local: LocalDriver) -> None:
    spec = make_spec()
    port = local.allocate_port(spec)
    local.create_directory(spec)
    with ThreadPoolExecutor(4) as pool:
        pids = set(pool.map(lambda _: local.start_process(spec, port), range(4)))
    assert len(pids) == 1
    local.wait_connectable(spec, port, timeout=15.0)
    assert len(standins_under(local.runtime_dir(spec))) == 1


def test_remove_directory_removes_the_files_and_the_runtime_files(local: LocalDriver) -> None:
    spec = make_spec()
    provision(local, spec)
    local.stop_process(spec)
    local.remove_directory(spec)
    assert not local.instance_dir(spec).exists()
    assert not local.runtime_dir(spec).exists()


# -- LocalDriver: backup archives ----------------------------------------------------------------


def _archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _leftovers(local: LocalDriver) -> list[str]:
    return sorted(p.name for p in local.instances_dir.iterdir() if ".old-" in p.name or ".restore-" in p.name)


def test_backup_archive_is_a_tar_gz_of_the_files_only(local: LocalDriver) -> None:
    spec = make_spec()
    provision(local, spec)
    local.write_file(spec, "world/level.dat", b"level")
    backup_id = uuid4()
    manifest = local.create_backup(spec, backup_id)
    path = local.data_dir / "backups" / f"{backup_id}.tar.gz"
    assert manifest["path"] == str(path)
    assert manifest["size"] == path.stat().st_size
    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with tarfile.open(path) as tar:
        names = sorted(tar.getnames())
    assert names == ["server.properties", "world", "world/level.dat"]  # no runtime files, no absolute names


def test_restore_of_a_corrupt_archive_leaves_the_files_untouched(local: LocalDriver) -> None:
    spec = _files_with_history(local)
    backup_id = uuid4()
    local.backups_dir.mkdir(parents=True, exist_ok=True)
    garbage = b"\x1f\x8b not really gzip"
    (local.backups_dir / f"{backup_id}.tar.gz").write_bytes(garbage)
    with pytest.raises(DriverError) as info:
        local.restore_backup(spec, backup_id, hashlib.sha256(garbage).hexdigest())
    assert info.value.code == "bad_archive"
    assert local.read_file(spec, "world/level.dat") == b"original level"
    assert _leftovers(local) == []


@pytest.mark.parametrize("member", ["../evil.txt", "/abs-evil.txt", "ok/../../evil.txt"])
def test_restore_rejects_members_escaping_the_root(local: LocalDriver, member: str) -> None:
    spec = _files_with_history(local)
    backup_id = uuid4()
    local.backups_dir.mkdir(parents=True, exist_ok=True)
    data = _archive({"fine.txt": b"fine", member: b"evil"})
    (local.backups_dir / f"{backup_id}.tar.gz").write_bytes(data)
    with pytest.raises(DriverError) as info:
        local.restore_backup(spec, backup_id, hashlib.sha256(data).hexdigest())
    assert info.value.code == "bad_archive"
    assert local.read_file(spec, "world/level.dat") == b"original level"
    assert not any(p.name.endswith("evil.txt") for p in local.data_dir.rglob("*"))
    assert _leftovers(local) == []


def test_restore_leaves_no_temporary_directories(local: LocalDriver) -> None:
    spec = _files_with_history(local)
    backup_id = uuid4()
    manifest = local.create_backup(spec, backup_id)
    local.restore_backup(spec, backup_id, manifest["sha256"])
    assert _leftovers(local) == []
    assert sorted(p.name for p in local.instances_dir.iterdir()) == [str(spec.instance_id)]


def test_backups_skip_links_leading_outside(local: LocalDriver, tmp_path: Path) -> None:
    spec = _files_with_history(local)
    root = local.instance_dir(spec)
    (root / "escape").symlink_to(tmp_path)
    (root / "alias").symlink_to("server.properties")
    backup_id = uuid4()
    manifest = local.create_backup(spec, backup_id)
    (root / "escape").unlink()
    local.restore_backup(spec, backup_id, manifest["sha256"])
    assert not (root / "escape").is_symlink()
    assert (root / "alias").is_symlink()
    assert local.read_file(spec, "alias") == b"motd=before\n"
