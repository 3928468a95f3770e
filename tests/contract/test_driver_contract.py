"""The `InstanceDriver` contract, run against `FakeDriver`, `LocalDriver`, `AgentDriver` and `ProxmoxDriver` alike.

`LocalDriver` and `AgentDriver` run the shipped templates' real servers: flying-squid for
`minecraft`, JupyterLab for `python`, from the install cache the whole test run shares
(`tests.real_servers`: installed once, by the first test that needs it). `AgentDriver` runs
against a node agent started in a thread over a `LocalDriver` on `tmp_path`, with a fresh
random secret. `ProxmoxDriver` runs against `FakeProxmox` over HTTPS (`tests.fakes.proxmox_cluster`),
where each running container has its own loopback address and a node agent on it. The local-only
tests at the end look at the real processes and files. Every spawned process is killed in teardown,
and teardown checks none survived.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import signal
import socket
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from mcstatus import JavaServer

from services.adapters.agent_client import AgentDriver
from services.adapters.fake_driver import FakeDriver
from services.adapters.proxmox_driver import ProxmoxDriver
from services.agent.driver import LocalDriver
from services.agent.server import start_agent_in_thread
from services.infrastructure.templates import shipped_catalogue
from services.ports import DriverError, InstanceSpec
from tests.fakes.proxmox_cluster import fake_cluster
from tests.real_servers import cache_dir, install

ZONE = "play.zlh.localhost"
#: A small write limit keeps the too-large test light.
WRITE_LIMIT = 64 * 1024
#: How long a real server may take to answer its readiness check on a busy machine.
READY = 60.0
Driver = FakeDriver | LocalDriver | AgentDriver | ProxmoxDriver


def make_spec(kind: str = "game", name: str = "alpha", **variables: object) -> InstanceSpec:
    """An instance of the shipped `minecraft` (game) or `python` (dev) template, with `variables` set."""
    catalogue = shipped_catalogue()
    template = "minecraft" if kind == "game" else "python"
    instance_id = uuid4()
    return catalogue.spec(instance_id, kind, template, f"{name}-{instance_id.hex[:8]}",
                          catalogue.resolve(kind, template, variables))


def said(log: str, text: str) -> bool:
    """Whether the console shows `say TEXT`: flying-squid logs `[Server] TEXT`, the fake `[server] TEXT`."""
    return re.search(rf"\[[Ss]erver\] {re.escape(text)}$", log, re.MULTILINE) is not None


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


def live_in(data_dir: Path) -> list[int]:
    """Pids of live processes whose working directory is under `data_dir` (the servers' is their files)."""
    found = []
    root = str(data_dir.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if (cwd == root or cwd.startswith(root + "/")) and state != "Z":
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def local_driver(data_dir: Path) -> Iterator[LocalDriver]:
    """A `LocalDriver` on `data_dir` and the shared install cache; on exit every server it started is killed,
    and checked gone. flying-squid and JupyterLab are in the cache before any timed step (the run's first
    local driver installs them if no earlier run has)."""
    install("minecraft")
    install("python")
    driver = LocalDriver(data_dir, max_write_bytes=WRITE_LIMIT, cache_dir=cache_dir())
    try:
        yield driver
    finally:
        driver.kill_all()
        eventually(lambda: not live_in(data_dir), what="the servers to be gone")


@dataclass
class Backend:
    """A driver under test, and the `LocalDriver` holding its node's files (None for the fake)."""

    driver: Driver
    node: LocalDriver | None


@pytest.fixture(params=["fake", "local", "agent", "proxmox"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "fake":
        yield Backend(FakeDriver(max_write_bytes=WRITE_LIMIT), None)
    elif request.param == "proxmox":
        install("minecraft")
        install("python")
        with fake_cluster(tmp_path / "cluster", max_write_bytes=WRITE_LIMIT, cache_dir=cache_dir()) as cluster:
            proxmox = cluster.driver()
            try:
                yield Backend(proxmox, None)
            finally:
                proxmox.close()
        eventually(lambda: not live_in(tmp_path / "cluster"), what="the servers to be gone")
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
    """The provisioning steps up to a server that answers; returns (port, pid)."""
    port = driver.allocate_port(spec)
    driver.create_directory(spec)
    driver.install(spec)
    pid = driver.start_process(spec, port)
    driver.wait_connectable(spec, port, timeout=READY)
    return port, pid


# -- the contract, every driver -----------------------------------------------------------------


def test_allocate_port_is_idempotent_and_distinct(driver: Driver) -> None:
    a, b = make_spec(), make_spec()
    port = driver.allocate_port(a)
    assert 0 < port < 65536
    assert driver.allocate_port(a) == port
    other = driver.allocate_port(b)
    # Distinct on one host; instances on different hosts (Proxmox containers) may share a port number.
    assert (driver.public_host(b), other) != (driver.public_host(a), port)


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
    driver.install(spec)
    pid = driver.start_process(spec, port)
    assert pid > 0
    driver.wait_connectable(spec, port, timeout=READY)
    assert driver.is_running(spec, port)
    host = driver.public_host(spec)  # 127.0.0.1, or the Proxmox container's own address
    expected = f"http://{host}:{port}/lab?token={spec.variables['token']}" if kind == "dev" else f"{host}:{port}"
    assert driver.address(spec, port) == expected


def test_install_is_once_per_node_and_start_needs_it(driver: Driver) -> None:
    first, second = make_spec(), make_spec(name="beta", motd="another motd")
    result = driver.install(first)
    assert set(result) == {"cache", "reused", "seconds"} and result["cache"].startswith("minecraft-")
    again = driver.install(second)  # another instance, other variables, the same install
    assert again["cache"] == result["cache"] and again["reused"] is True
    edited = dict(first.definition.source)  # type: ignore[union-attr]
    edited["install"] = [*edited["install"], {"write": "extra.txt", "content": "a new version"}]
    from domain.templates import Template

    newer = InstanceSpec(uuid4(), "game", "minecraft", "gamma-1", first.variables,
                         Template.from_dict("minecraft", edited))
    port = driver.allocate_port(newer)
    driver.create_directory(newer)
    with pytest.raises(DriverError) as info:
        driver.start_process(newer, port)  # a changed install is another install, not done yet
    assert info.value.code == "not_installed"
    without = InstanceSpec(uuid4(), "game", "gone", "delta-1")
    for call in (lambda: driver.install(without), lambda: driver.start_process(without, port)):
        with pytest.raises(DriverError) as info:
            call()
        assert info.value.code == "unknown_template"


def test_start_twice_returns_the_same_pid(driver: Driver) -> None:
    spec = make_spec()
    port, pid = provision(driver, spec)
    assert driver.start_process(spec, port) == pid
    driver.wait_connectable(spec, port, timeout=READY)
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
    driver.wait_connectable(spec, port, timeout=READY)
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
    eventually(lambda: said(driver.console_log(spec), "hello"), what="the say line")


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


def test_config_files_are_rendered_from_the_variables_once(driver: Driver) -> None:
    spec = make_spec(motd='The "contract" server', max_players=7)
    port, _pid = provision(driver, spec)
    settings = json.loads(driver.read_file(spec, "/settings.json"))
    assert settings["motd"] == 'The "contract" server' and settings["max-players"] == 7
    assert settings["online-mode"] is False
    mine = json.dumps({**settings, "motd": "mine"}).encode()
    driver.write_file(spec, "/settings.json", mine)  # the customer's own edit survives a restart
    driver.stop_process(spec)
    driver.start_process(spec, port)
    driver.wait_connectable(spec, port, timeout=READY)
    assert driver.read_file(spec, "/settings.json") == mine


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
    fake.install(spec)
    with pytest.raises(DriverError) as info:
        fake.start_process(spec, port)
    assert info.value.code == "spawn_failed"
    del fake.fail_on["start_process"]
    fake.start_process(spec, port)
    assert fake.calls == [
        ("allocate_port", spec.instance_id),
        ("install", spec.instance_id),
        ("start_process", spec.instance_id),
        ("start_process", spec.instance_id),
    ]
    fake.crash(spec.instance_id)
    assert not fake.is_running(spec, port)


# -- LocalDriver: real processes and files -------------------------------------------------------


def test_a_game_server_answers_a_server_list_ping(local: LocalDriver) -> None:
    spec = make_spec(motd="Pinged by the contract", max_players=9)
    port, _pid = provision(local, spec)
    status = JavaServer("127.0.0.1", port, timeout=5).status(tries=1)
    assert status.version.name == "1.21.4" and status.version.protocol == 769
    assert status.motd.to_plain() == "Pinged by the contract"
    assert (status.players.online, status.players.max) == (0, 9)


def test_a_dev_server_is_jupyterlab_answering_its_own_token_only(local: LocalDriver) -> None:
    spec = make_spec("dev")
    port, _pid = provision(local, spec)
    token = spec.variables["token"]
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/api/status", params={"token": token}, timeout=10).status_code == 200
    assert httpx.get(f"{base}/api/status", timeout=10).status_code == 403
    assert httpx.get(f"{base}/api/status", params={"token": "x" * 32}, timeout=10).status_code == 403
    lab = httpx.get(local.address(spec, port), timeout=10, follow_redirects=True)
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    contents = httpx.get(f"{base}/api/contents", params={"token": token}, timeout=10).json()
    assert contents["path"] == ""  # its root is the instance's files
    local.write_file(spec, "notebook.py", b"print('hi')\n")
    listed = httpx.get(f"{base}/api/contents", params={"token": token}, timeout=10).json()["content"]
    assert [c["name"] for c in listed] == ["notebook.py"]


def test_a_server_runs_in_its_own_session_with_runtime_files_out_of_the_files_root(local: LocalDriver) -> None:
    spec = make_spec()
    _port, pid = provision(local, spec)
    assert os.getsid(pid) == pid
    d = Path(local.create_directory(spec))
    assert d == local.data_dir / "instances" / str(spec.instance_id)
    assert os.readlink(f"/proc/{pid}/cwd") == str(d)
    rt = local.data_dir / "runtime" / str(spec.instance_id)
    assert local.runtime_dir(spec) == rt
    assert (rt / "server.pid").read_text().split()[0] == str(pid)
    assert stat.S_ISFIFO((rt / "console.in").stat().st_mode)
    assert {p.name for p in rt.iterdir()} >= {"port", "server.pid", "server.json", "console.log", "console.in",
                                              "home"}
    assert stat.S_IMODE((rt / "server.json").stat().st_mode) == 0o600
    assert {p.name for p in d.iterdir()} == {"settings.json", "world"}
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in environ if v.startswith(b"ZLH_AGENT")]  # no agent setting reaches a server
    assert b"FLYING_SQUID_HOME=" + str(cache_dir()).encode() in b"".join(environ)


def test_stop_sends_the_stop_command_and_removes_the_pid_file(local: LocalDriver) -> None:
    spec = make_spec()
    provision(local, spec)
    pid_file = local.runtime_dir(spec) / "server.pid"
    local.stop_process(spec)
    assert not pid_file.exists()
    log = local.console_log(spec)
    assert "[ZLH] stopping (stop command)" in log and "[ZLH] stopped" in log


def test_sigterm_is_a_graceful_stop(local: LocalDriver) -> None:
    spec = make_spec()
    port, pid = provision(local, spec)
    os.kill(pid, signal.SIGTERM)
    eventually(lambda: not local.is_running(spec, port), what="the process to exit")
    log = local.console_log(spec)
    assert "[ZLH] stopping (SIGTERM)" in log and "[ZLH] stopped" in log


def test_console_commands_are_the_servers_own(local: LocalDriver) -> None:
    spec = make_spec(max_players=4)
    provision(local, spec)
    local.send_console(spec, "list")
    local.send_console(spec, "frobnicate")
    eventually(lambda: "[ZLH] players online=0 max=4: " in local.console_log(spec), what="the list line")
    eventually(lambda: "Command not found" in local.console_log(spec), what="flying-squid's own answer")


def test_a_new_driver_finds_a_running_server(local: LocalDriver) -> None:
    spec = make_spec()
    port, pid = provision(local, spec)
    again = LocalDriver(local.data_dir, cache_dir=cache_dir())
    assert again.allocate_port(spec) == port
    assert again.start_process(spec, port) == pid
    assert again.is_running(spec, port)


def test_start_on_another_port_replaces_the_process(local: LocalDriver) -> None:
    spec = make_spec()
    port, pid = provision(local, spec)
    other = local.allocate_port(make_spec())
    new_pid = local.start_process(spec, other)
    assert new_pid != pid
    local.wait_connectable(spec, other, timeout=READY)
    assert local.is_running(spec, other)
    assert not local.is_running(spec, port)


def test_wait_connectable_fails_fast_when_the_port_is_taken(local: LocalDriver) -> None:
    spec = make_spec()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        local.create_directory(spec)
        local.install(spec)
        local.start_process(spec, port)
        started = time.monotonic()
        with pytest.raises(DriverError) as info:
            local.wait_connectable(spec, port, timeout=READY)
    assert info.value.code == "process_exited"
    assert time.monotonic() - started < READY / 2
    assert "cannot listen" in info.value.message  # the end of the server's own console


def test_a_stale_pid_file_is_ignored(local: LocalDriver) -> None:
    spec = make_spec()
    port = local.allocate_port(spec)
    local.create_directory(spec)
    local.install(spec)
    for stale in (f"{os.getpid()}\n", f"{os.getpid()} 1\n"):  # alive, but not the process recorded
        (local.runtime_dir(spec) / "server.pid").write_text(stale)
        assert not local.is_running(spec, port)
    pid = local.start_process(spec, port)
    assert pid != os.getpid()
    local.wait_connectable(spec, port, timeout=READY)


def test_not_connectable_after_timeout(local: LocalDriver) -> None:
    spec = make_spec()
    port = local.allocate_port(spec)
    local.create_directory(spec)
    local.install(spec)
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
    local.install(spec)
    with ThreadPoolExecutor(4) as pool:
        pids = set(pool.map(lambda _: local.start_process(spec, port), range(4)))
    assert len(pids) == 1
    local.wait_connectable(spec, port, timeout=READY)
    assert live_in(local.instance_dir(spec)) == list(pids)


def test_the_install_cache_defaults_to_the_data_dir(tmp_path: Path) -> None:
    driver = LocalDriver(tmp_path / "data")
    assert driver.installer.cache_root == (tmp_path / "data" / "cache").resolve()
    spec = make_spec()
    assert spec.definition is not None
    assert driver.installer.cache_dir(spec.definition, spec.variables).parent == \
        (tmp_path / "data" / "cache" / "templates").resolve()


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
    local.create_directory(spec)
    local.write_file(spec, "server.properties", b"motd=x\n")
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


def test_stats_of_a_running_game_server_and_none_once_stopped(driver: Driver) -> None:
    """Every driver reports a running server's live sample (a real Server List Ping for the players) and its
    disk use; `current` is None once it is stopped."""
    spec = make_spec()
    provision(driver, spec)
    driver.write_file(spec, "notes.txt", b"n" * 100)
    stats = eventually(lambda: (s := driver.stats(spec))["current"] and s["current"]["players_max"] is not None
                       and s, timeout=20, what="a sample with the players")
    current = stats["current"]
    assert {"cpu_percent", "memory_bytes", "disk_bytes", "players_online", "players_max", "sampled_at"} <= set(current)
    assert (current["players_online"], current["players_max"]) == (0, 20)
    assert stats["disk_bytes"] >= 100 and stats["limits"]["disk_bytes"] > 0
    assert str(spec.instance_id) in driver.node_stats()
    driver.stop_process(spec)
    assert driver.stats(spec)["current"] is None
