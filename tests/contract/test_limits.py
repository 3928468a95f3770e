"""Kernel limits, the disk quota and live stats on a real node (`LocalDriver`, real processes).

Memory and CPU limits are the kernel's (cgroups): where this machine does not let the agent write
cgroups these tests fail and say why; they never skip.
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from domain.templates import Template
from services.agent import installs
from services.agent.driver import LocalDriver
from services.agent.stats import StatsSampler
from services.ports import DriverError, InstanceSpec
from tests.contract.test_driver_contract import eventually, local_driver

pytestmark = pytest.mark.real_services  # real processes and cgroups

HOG_SERVER = r'''
import os, sys, time
if os.environ.get("EAT_AT_START") == "true":
    hoard = bytearray(os.urandom(1)) * (512 * 1024 * 1024)
print("hog ready", flush=True)
for line in sys.stdin:
    if line.strip() == "eat":
        print("eating", flush=True)
        hoard = []
        while True:
            hoard.append(bytearray(16 * 1024 * 1024))
            hoard[-1][::4096] = b"x" * len(hoard[-1][::4096])
    if line.strip() == "quit":
        sys.exit(0)
'''

HOG = f"""
kind = "dev"
description = "a process that eats memory when told to"

[resources]
memory_mb = 64
cpus = 0.5
disk_mb = 1

[variables.eat_at_start]
type = "bool"
default = false

[[install]]
write = "hog.py"
content = '''{HOG_SERVER}'''

[start]
command = ["${{system_python}}", "-u", "${{cache}}/hog.py"]
env = {{ EAT_AT_START = "${{eat_at_start}}" }}

[stop]
command = "quit"
timeout = 2

[ready]
check = "console"
pattern = "^hog ready$"
timeout = 20
"""


def hog_spec(**variables: Any) -> InstanceSpec:
    template = Template.from_dict("hog", tomllib.loads(HOG))
    iid = uuid4()
    return InstanceSpec(iid, "dev", "hog", f"hog-{iid.hex[:8]}", {"eat_at_start": False, **variables}, template)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LocalDriver]:
    with local_driver(tmp_path / "data") as driver:
        driver.installer = installs.Installer(tmp_path / "cache", driver.launcher)
        yield driver


def require_cgroups(node: LocalDriver) -> None:
    if node.cgroups is None:
        pytest.fail(f"kernel limits cannot be tested on this machine: {node.limits_status} (run as root on a "
                    "machine whose cgroups the agent may write)")


def start(node: LocalDriver, spec: InstanceSpec) -> int:
    port = node.allocate_port(spec)
    node.create_directory(spec)
    node.install(spec)
    node.start_process(spec, port)
    return port


def test_the_agent_says_whether_the_kernel_enforces_limits(node: LocalDriver) -> None:
    assert node.limits_status.startswith(("enforced: cgroup v", "not enforced: "))
    require_cgroups(node)


def test_a_server_over_its_memory_limit_at_start_is_killed_by_the_kernel_and_the_start_says_why(
        node: LocalDriver) -> None:
    require_cgroups(node)
    spec = hog_spec(eat_at_start=True)
    port = start(node, spec)
    with pytest.raises(DriverError) as failure:
        node.wait_connectable(spec, port, 20)
    assert failure.value.code == "out_of_memory", failure.value.message
    assert "64 MiB" in failure.value.message
    exit_record = eventually(lambda: node.last_exit(spec), what="the exit to be recorded")
    assert exit_record["reason"] == "out_of_memory"


def test_a_running_server_that_grows_over_its_limit_is_killed_and_its_exit_recorded(node: LocalDriver) -> None:
    require_cgroups(node)
    spec = hog_spec()
    port = start(node, spec)
    node.wait_connectable(spec, port, 20)
    group = node.cgroup(spec)
    assert group is not None and group.memory_bytes() is not None
    node.send_console(spec, "eat")
    eventually(lambda: not node.is_running(spec, port), timeout=30, what="the kernel to kill the hog")
    record = eventually(lambda: node.last_exit(spec), what="the exit to be recorded")
    assert record["reason"] == "out_of_memory", record
    assert group.oom_kills() >= 1


def test_a_stopped_server_is_recorded_as_stopped_not_as_a_crash(node: LocalDriver) -> None:
    spec = hog_spec()
    port = start(node, spec)
    node.wait_connectable(spec, port, 20)
    node.stop_process(spec)
    assert node.last_exit(spec)["reason"] == "stopped"


def test_writes_over_the_disk_quota_are_refused_and_write_nothing(node: LocalDriver) -> None:
    spec = hog_spec()
    node.create_directory(spec)
    node.set_limits(spec, {"memory_mb": 64, "cpus": 0.5, "disk_bytes": 1000})
    node.write_file(spec, "a.bin", b"a" * 600)
    with pytest.raises(DriverError) as refused:
        node.write_file(spec, "b.bin", b"b" * 500)
    assert refused.value.code == "quota_exceeded"
    assert [e["name"] for e in node.list_files(spec, "/")] == ["a.bin"]
    node.write_file(spec, "a.bin", b"c" * 1000)  # replacing a file counts only the difference
    assert node.disk_usage(spec) == 1000


def test_the_template_sets_the_quota_when_the_control_plane_sent_none(node: LocalDriver) -> None:
    spec = hog_spec()
    node.create_directory(spec)
    assert node.limits(spec).disk_bytes == 1024 * 1024  # the template's disk_mb
    for n in range(1024 * 1024 // 60_000):  # 17 writes of 60 kB fit in 1 MiB
        node.write_file(spec, f"part-{n}.bin", b"x" * 60_000)
    with pytest.raises(DriverError) as refused:
        node.write_file(spec, "one-too-many.bin", b"x" * 60_000)
    assert refused.value.code == "quota_exceeded"


def test_stats_sample_cpu_memory_and_disk_of_a_running_server(node: LocalDriver) -> None:
    spec = hog_spec()
    port = start(node, spec)
    node.wait_connectable(spec, port, 20)
    node.write_file(spec, "notes.txt", b"n" * 123)
    sampler = StatsSampler(node, interval=60)
    sampler.sample_now()
    sampler.sample_now()
    current = sampler.current(spec.instance_id)
    assert current is not None
    assert current["memory_bytes"] > 1024 * 1024
    assert current["disk_bytes"] == 123
    assert current["cpu_percent"] >= 0
    assert current["players_online"] is None and current["players_max"] is None  # not a game server
    assert len(sampler.history(spec.instance_id)) == 2
    node.stop_process(spec)
    assert sampler.current(spec.instance_id) is None
    assert len(sampler.history(spec.instance_id)) == 2  # history stays until it ages out


# -- file writes and a restore are serialized --------------------------------------------------------


def test_no_acknowledged_write_is_lost_in_a_restores_swap(node: LocalDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers run while a restore swaps the files. Every acknowledged write is either in the restored tree,
    or was in the tree the restore replaced (so it was done before the swap, and deliberately replaced):
    none was written into the old tree after it was moved aside, where it would be lost silently."""
    import os
    import threading
    from uuid import uuid4 as new_id

    from services.agent import backups

    spec = hog_spec()
    node.create_directory(spec)
    node.write_file(spec, "base.txt", b"from the backup")
    backup_id = new_id()
    manifest = node.create_backup(spec, backup_id)
    replaced: set[str] = set()
    real_swap = backups._swap

    def observed_swap(files_root: Path, staging: Path) -> None:
        replaced.update(os.listdir(files_root))  # what the restore replaces, just before it moves it aside
        real_swap(files_root, staging)

    monkeypatch.setattr(backups, "_swap", observed_swap)
    acked: list[tuple[str, bytes]] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            name, body = f"w-{n}-{i}.txt", f"{n}:{i}".encode()
            try:
                node.write_file(spec, name, body)
            except BaseException as exc:  # reported below
                errors.append(exc)
                return
            acked.append((name, body))
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    eventually(lambda: len(acked) >= 20, what="writes before the restore")
    node.restore_backup(spec, backup_id, manifest["sha256"])
    after_restore = len(acked)
    eventually(lambda: len(acked) >= after_restore + 20, what="writes after the restore")
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    present = {e["name"] for e in node.list_files(spec, "/")}
    assert "base.txt" in present
    assert any(name in replaced for name, _ in acked) and any(name in present for name, _ in acked)
    for name, body in acked:
        if name in present:
            assert node.read_file(spec, name) == body
        else:
            assert name in replaced, f"{name} was acknowledged, is not in the restored files, and was not " \
                                     "among the files the restore replaced: lost"


def test_a_write_asked_for_during_a_restore_waits_for_it_and_lands_in_the_restored_files(
        node: LocalDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    from uuid import uuid4 as new_id

    from services.agent import backups

    spec = hog_spec()
    node.create_directory(spec)
    node.write_file(spec, "base.txt", b"from the backup")
    backup_id = new_id()
    manifest = node.create_backup(spec, backup_id)
    node.write_file(spec, "late.txt", b"before the restore: replaced")
    inside, release = threading.Event(), threading.Event()
    real_swap = backups._swap

    def held_swap(files_root: Path, staging: Path) -> None:
        inside.set()
        release.wait(30)
        real_swap(files_root, staging)

    monkeypatch.setattr(backups, "_swap", held_swap)
    restore = threading.Thread(target=node.restore_backup, args=(spec, backup_id, manifest["sha256"]))
    restore.start()
    assert inside.wait(30)
    write = threading.Thread(target=node.write_file, args=(spec, "late.txt", b"during the restore: kept"))
    write.start()
    write.join(timeout=0.5)
    assert write.is_alive(), "the write went ahead while the restore was swapping the files"
    release.set()
    restore.join(30)
    write.join(30)
    assert node.read_file(spec, "late.txt") == b"during the restore: kept"


# -- through the agent's HTTP API and its client ------------------------------------------------------


def test_through_the_agent_limits_travel_with_the_start_and_out_of_memory_reaches_the_control_plane(
        node: LocalDriver) -> None:
    from services.adapters.agent_client import AgentDriver
    from services.agent.server import start_agent_in_thread

    require_cgroups(node)
    url, stop = start_agent_in_thread(node, "s3cret")
    client = AgentDriver(url, "s3cret", disk_quota=512 * 1024)
    try:
        assert client.health()["limits"].startswith("enforced: cgroup v")
        spec = hog_spec(eat_at_start=True)
        port = client.allocate_port(spec)
        client.create_directory(spec)
        client.install(spec)
        assert node.limits(spec).disk_bytes == 512 * 1024  # the control plane's quota, under the template's 1 MiB
        client.start_process(spec, port)
        with pytest.raises(DriverError) as failure:
            client.wait_connectable(spec, port, 20)
        assert failure.value.code == "out_of_memory"
        assert "memory limit of 64 MiB" in failure.value.message  # the customer sees why
        stats = client.stats(spec)
        assert stats["current"] is None and stats["limits"]["memory_mb"] == 64 and stats["limits_enforced"]
        assert eventually(lambda: client.stats(spec)["last_exit"], what="the exit")["reason"] == "out_of_memory"
        healthy = hog_spec()
        port = client.allocate_port(healthy)
        client.create_directory(healthy)
        client.install(healthy)
        client.start_process(healthy, port)
        client.wait_connectable(healthy, port, 20)
        current = client.stats(healthy)["current"]
        assert current is not None and current["memory_bytes"] > 0
        assert str(healthy.instance_id) in client.node_stats()
    finally:
        client.close()
        stop()


# -- instances cannot read each other's files -------------------------------------------------------


@pytest.fixture
def open_node() -> Iterator[LocalDriver]:
    """A node whose data and cache directories other users can pass through (as /var/lib/zlh on a real node;
    pytest's own temporary directories are closed to other users)."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="zlh-users-", dir="/tmp"))
    base.chmod(0o755)
    try:
        with local_driver(base / "data") as driver:
            driver.installer = installs.Installer(base / "cache", driver.launcher)
            yield driver
    finally:
        for instance in (base / "data" / "runtime").glob("*"):
            with contextlib.suppress(ValueError):
                driver.users.remove(instance.name)
        shutil.rmtree(base, ignore_errors=True)


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def test_each_instance_runs_as_its_own_user_and_cannot_read_anothers_files(open_node: LocalDriver) -> None:
    import os
    import pwd
    import subprocess

    from services.agent.users import user_name

    node = open_node
    if not node.users.enabled:
        pytest.fail(f"per-instance users cannot be tested here: {node.users.status}")
    a, b = hog_spec(), hog_spec()
    pids = {}
    for spec in (a, b):
        port = start(node, spec)
        node.wait_connectable(spec, port, 20)
        pids[spec.instance_id] = node.live_servers()[str(spec.instance_id)]
    node.write_file(b, "secret/notes.txt", b"b's secret")
    uid_a, uid_b = (pwd.getpwnam(user_name(s.instance_id)).pw_uid for s in (a, b))
    assert uid_a != uid_b and 0 not in (uid_a, uid_b)
    assert _uid_of(pids[a.instance_id]) == uid_a and _uid_of(pids[b.instance_id]) == uid_b
    b_files = node.instance_dir(b)
    st = b_files.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (uid_b, 0o700)
    assert (b_files / "secret" / "notes.txt").stat().st_uid == uid_b
    assert (b_files / "secret").stat().st_uid == uid_b  # the directory the agent made for the write, too
    as_a = ["setpriv", f"--reuid={uid_a}", f"--regid={uid_a}", "--clear-groups", "--"]
    peek = subprocess.run([*as_a, "cat", str(b_files / "secret" / "notes.txt")], capture_output=True, text=True,
                          check=False)
    assert peek.returncode != 0 and "Permission denied" in peek.stderr
    listing = subprocess.run([*as_a, "ls", str(node.instances_dir)], capture_output=True, text=True, check=False)
    assert listing.returncode != 0  # instances/ is 0711: no one else can list it
    own = subprocess.run([*as_a, "ls", str(node.instance_dir(a))], capture_output=True, text=True, check=False)
    assert own.returncode == 0, own.stderr
    # A restore gives the restored files to the instance's user as well.
    node.stop_process(b)
    backup_id = uuid4()
    manifest = node.create_backup(b, backup_id)
    node.restore_backup(b, backup_id, manifest["sha256"])
    assert node.instance_dir(b).stat().st_uid == uid_b
    assert (node.instance_dir(b) / "secret" / "notes.txt").stat().st_uid == uid_b
    node.remove_directory(b)
    with pytest.raises(KeyError):
        pwd.getpwnam(user_name(b.instance_id))
    assert os.geteuid() == 0


def test_an_agent_that_cannot_enforce_limits_says_so_in_its_health_and_the_readiness_check(tmp_path: Path) -> None:
    from services.adapters.agent_client import AgentDriver
    from services.agent.server import start_agent_in_thread
    from services.stats import limits_status

    node = LocalDriver(tmp_path / "data", cgroups=None)
    assert node.limits_status == "not enforced: disabled for this driver"
    url, stop = start_agent_in_thread(node, "s3cret")
    client = AgentDriver(url, "s3cret")
    try:
        assert client.health()["limits"] == "not enforced: disabled for this driver"
        assert limits_status(client) == "not enforced: disabled for this driver"  # what /readyz shows
        spec = hog_spec()
        port = start(node, spec)
        node.wait_connectable(spec, port, 20)
        assert node.cgroup(spec) is None and client.stats(spec)["limits_enforced"] is False
        assert client.stats(spec)["current"]["memory_bytes"] > 0  # from /proc, without a cgroup
    finally:
        client.close()
        stop()
        node.kill_all()
