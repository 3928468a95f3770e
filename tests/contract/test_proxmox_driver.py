"""`ProxmoxDriver` specifics against `FakeProxmox` over HTTPS: ownership, VMIDs, tasks, TLS, observation.

The shared `InstanceDriver` contract runs in test_driver_contract.py; these tests need no real
server (the node agent in each container only allocates ports and makes directories here).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from services.adapters.proxmox_driver import (
    MAX_PROBES,
    ProxmoxDriver,
    choose_node,
    description,
    parse_vmid_range,
    vmid_candidates,
)
from services.ports import DriverError, InstanceSpec
from tests.fakes.proxmox_api import Container
from tests.fakes.proxmox_cluster import VMID_RANGE, FakeCluster, fake_cluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    with fake_cluster(tmp_path / "cluster") as c:
        yield c


@pytest.fixture
def driver(cluster: FakeCluster) -> Iterator[ProxmoxDriver]:
    d = cluster.driver()
    yield d
    d.close()


def spec_of(instance_id: UUID | None = None, name: str = "alpha") -> InstanceSpec:
    iid = instance_id or uuid4()
    return InstanceSpec(iid, "game", "minecraft", f"{name}-{iid.hex[:8]}")


def put_container(cluster: FakeCluster, vmid: int, config: dict[str, object], node: str = "pve",
                  status: str = "stopped") -> Container:
    """A container made outside ZLH (or by an earlier run), straight into the fake."""
    container = Container(vmid, node, {"hostname": f"ct{vmid}", "memory": 512, "cores": 1, **config}, status=status)
    cluster.fake.containers[vmid] = container
    return container


def test_vmid_candidates_are_deterministic_and_inside_the_range() -> None:
    iid = uuid4()
    first = vmid_candidates(iid, (10000, 19999))
    assert first == vmid_candidates(iid, (10000, 19999))
    assert len(first) == MAX_PROBES == len(set(first))
    assert all(10000 <= v <= 19999 for v in first)
    assert sorted(vmid_candidates(iid, (500, 502))) == [500, 501, 502]  # a small range wraps, no duplicates
    assert parse_vmid_range(" 10000 - 19999 ") == (10000, 19999)
    for bad in ("10000", "99-200", "200-100", "a-b"):
        with pytest.raises(ValueError):
            parse_vmid_range(bad)


def test_choose_node_takes_the_online_node_with_most_free_memory() -> None:
    nodes = [
        {"node": "pve", "status": "online", "maxmem": 64, "mem": 60},
        {"node": "pve2", "status": "online", "maxmem": 32, "mem": 8},
        {"node": "pve3", "status": "offline", "maxmem": 128, "mem": 0},
        {"node": "other", "status": "online", "maxmem": 512, "mem": 0},
    ]
    assert choose_node(nodes, ("pve", "pve2", "pve3")) == "pve2"
    with pytest.raises(DriverError) as info:
        choose_node(nodes, ("pve3",))
    assert info.value.code == "no_node"


def test_create_tags_and_describes_the_container_and_sizes_it(cluster: FakeCluster, driver: ProxmoxDriver) -> None:
    from services.infrastructure.templates import shipped_catalogue

    catalogue = shipped_catalogue()
    iid = uuid4()
    spec = catalogue.spec(iid, "game", "minecraft", f"alpha-{iid.hex[:8]}", catalogue.resolve("game", "minecraft", {}))
    driver.allocate_port(spec)
    (vmid,) = cluster.fake.containers
    assert vmid == vmid_candidates(iid, VMID_RANGE)[0]
    config = cluster.fake.containers[vmid].config
    assert config["tags"] == "zlh;game"
    assert config["description"].splitlines()[0] == f"zlh instance {iid}"
    resources = spec.definition.resources  # type: ignore[union-attr]
    assert config["memory"] == resources.memory_mb and config["cores"] == 1
    assert config["rootfs"] == f"local-lvm:vm-{vmid}-disk-0,size={resources.disk_mb // 1024 + 4}G"
    assert config["hostname"] == f"zlh-alpha-{iid.hex[:8]}"
    assert cluster.fake.containers[vmid].status == "running"
    assert cluster.fake.task_kinds() == ["vzcreate", "vzstart"]


def test_an_existing_container_of_ours_is_adopted(cluster: FakeCluster) -> None:
    spec = spec_of()
    vmid = vmid_candidates(spec.instance_id, VMID_RANGE)[3]  # wherever in the probe sequence it is
    put_container(cluster, vmid, {"tags": "zlh;game", "description": description(spec)}, node="pve2")
    driver = cluster.driver()
    try:
        port = driver.allocate_port(spec)
        assert driver.allocate_port(spec) == port  # and again: still the same container, the same port
    finally:
        driver.close()
    assert list(cluster.fake.containers) == [vmid]
    assert cluster.fake.task_kinds() == ["vzstart"]  # started, never created again


def test_a_foreign_container_on_our_vmid_is_never_touched(cluster: FakeCluster, driver: ProxmoxDriver) -> None:
    spec = spec_of()
    first, second, third = vmid_candidates(spec.instance_id, VMID_RANGE)[:3]
    foreign = put_container(cluster, first, {"description": description(spec)}, status="running")  # no tag
    other = put_container(cluster, second, {"tags": "zlh;game", "description": description(spec_of())})
    before = (dict(foreign.config), dict(other.config))
    driver.allocate_port(spec)
    assert set(cluster.fake.containers) == {first, second, third}
    assert cluster.fake.containers[third].config["description"].startswith(f"zlh instance {spec.instance_id}")
    driver.stop_process(spec)
    driver.remove_directory(spec)
    assert set(cluster.fake.containers) == {first, second}
    assert (foreign.config, other.config) == before and (foreign.status, other.status) == ("running", "stopped")
    touched = {int(t.upid.split(":")[6]) for t in cluster.fake.tasks.values()}
    assert touched == {third}


def test_no_free_vmid_is_refused_without_touching_anything(cluster: FakeCluster) -> None:
    spec = spec_of()
    driver = cluster.driver(vmid_range=(10000, 10001))
    for vmid in (10000, 10001):
        put_container(cluster, vmid, {"tags": "web"})
    try:
        with pytest.raises(DriverError) as info:
            driver.create_directory(spec)
    finally:
        driver.close()
    assert info.value.code == "vmid_exhausted"
    assert cluster.fake.tasks == {}


def test_a_failed_task_fails_the_step_with_its_text(cluster: FakeCluster, driver: ProxmoxDriver) -> None:
    cluster.fake.fail_next_task("vzcreate", "unable to create CT 10001 - no space left on device")
    with pytest.raises(DriverError) as info:
        driver.allocate_port(spec_of())
    assert info.value.code == "proxmox_task_failed"
    assert "no space left on device" in info.value.message
    assert cluster.fake.containers == {}  # the failed create left nothing
    cluster.fake.fail_next_task("vzstart", "startup for container '10001' failed")
    spec = spec_of()
    with pytest.raises(DriverError) as info:
        driver.allocate_port(spec)
    assert info.value.code == "proxmox_task_failed" and "startup for container" in info.value.message


def test_a_task_that_never_finishes_fails_the_step_at_its_deadline(cluster: FakeCluster) -> None:
    driver = cluster.driver(task_timeout=0.5)
    cluster.fake.task_polls = 0
    cluster.fake.hang_next_task("vzstart")
    spec = spec_of()
    try:
        with pytest.raises(DriverError) as info:
            driver.allocate_port(spec)
        assert info.value.code == "proxmox_task_timeout"
        assert "not started again" in info.value.message
        assert cluster.fake.task_kinds() == ["vzcreate", "vzstart"]  # no blind second start
        hung = next(t for t in cluster.fake.tasks.values() if t.kind == "vzstart")
        cluster.fake.finish_task(hung.upid)  # the task ends after all: the next step goes on from there
        driver.allocate_port(spec)
        assert cluster.fake.task_kinds() == ["vzcreate", "vzstart"]
    finally:
        driver.close()


def test_a_shutdown_that_hangs_is_followed_by_a_stop(cluster: FakeCluster) -> None:
    driver = cluster.driver(shutdown_timeout=0.2)
    spec = spec_of()
    try:
        driver.create_directory(spec)
        cluster.fake.hang_next_task("vzshutdown")
        driver.remove_directory(spec)
    finally:
        driver.close()
    assert cluster.fake.task_kinds() == ["vzcreate", "vzstart", "vzshutdown", "vzstop", "vzdestroy"]
    assert cluster.fake.containers == {}


def test_a_wrong_ca_or_token_is_refused(cluster: FakeCluster) -> None:
    for overrides, code in (({"ca_file": str(cluster.tls.other_ca_file)}, "proxmox_tls_error"),
                            ({"token_secret": "wrong"}, "proxmox_unauthorized")):
        driver = cluster.driver(**overrides)
        try:
            with pytest.raises(DriverError) as info:
                driver.allocate_port(spec_of())
        finally:
            driver.close()
        assert info.value.code == code
        assert "wrong" not in info.value.message
    assert cluster.fake.containers == {}


def test_observe_lists_our_containers_by_tag_only(cluster: FakeCluster, driver: ProxmoxDriver) -> None:
    spec = spec_of()
    driver.create_directory(spec)
    orphan = uuid4()
    put_container(cluster, 10990, {"tags": "zlh;game", "description": f"zlh instance {orphan}\nold"})
    put_container(cluster, 10991, {"tags": "zlh", "description": "hand-made"})
    put_container(cluster, 10992, {"description": f"zlh instance {uuid4()}"}, status="running")  # not tagged
    observed = driver.observe()
    assert set(observed["directories"]) == {str(spec.instance_id), str(orphan)}
    assert observed["processes"] == []
    by_vmid = {c["vmid"]: c for c in observed["containers"]}
    assert set(by_vmid) == {vmid_candidates(spec.instance_id, VMID_RANGE)[0], 10990, 10991}
    assert by_vmid[10990]["instance_id"] == str(orphan) and by_vmid[10991]["instance_id"] is None


def test_serve_refuses_to_start_naming_a_missing_setting(cluster: FakeCluster, tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ZLH_")}, **cluster.env(),
           "PYTHONPATH": str(ROOT), "ZLH_DATABASE_URL": f"sqlite:///{tmp_path}/zlh.sqlite3",
           "ZLH_DATA_DIR": str(tmp_path / "data")}
    del env["ZLH_PROXMOX_TEMPLATE"]
    refused = subprocess.run([sys.executable, "-m", "api.cli", "serve", "--port", "0"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert "ZLH_PROXMOX_TEMPLATE" in refused.stderr and "not set" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert cluster.fake.calls == []


def test_the_console_is_looked_up_when_entered(driver: ProxmoxDriver) -> None:
    import asyncio

    session = driver.console(spec_of())  # no container: nothing is asked of Proxmox until it is entered

    async def enter() -> None:
        async with session:
            pass

    with pytest.raises(DriverError) as info:
        asyncio.run(enter())
    assert info.value.code == "not_running"


def test_a_vmid_used_by_a_container_the_token_cannot_see_is_skipped(cluster: FakeCluster,
                                                                     driver: ProxmoxDriver) -> None:
    spec = spec_of()
    first, second = vmid_candidates(spec.instance_id, VMID_RANGE)[:2]
    invisible = put_container(cluster, first, {"tags": "prod", "description": "the customer database"})
    cluster.fake.hidden.add(first)
    driver.create_directory(spec)
    assert cluster.fake.containers[second].config["description"].startswith(f"zlh instance {spec.instance_id}")
    assert invisible.config == {"hostname": f"ct{first}", "memory": 512, "cores": 1, "tags": "prod",
                                "description": "the customer database"}
    assert cluster.fake.task_kinds() == ["vzcreate", "vzstart"]  # the refused create made no task
    assert driver.observe()["directories"] == [str(spec.instance_id)]


def test_new_containers_join_the_pool(cluster: FakeCluster) -> None:
    driver = cluster.driver(pool="zlh")
    try:
        driver.create_directory(spec_of())
    finally:
        driver.close()
    assert [c.pool for c in cluster.fake.containers.values()] == ["zlh"]
