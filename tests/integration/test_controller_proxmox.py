"""The controller on the proxmox driver: containers observed by tag against `FakeProxmox` (HTTPS) with a node
agent in each container, a real store, and the in-memory edge.

A ZLH-tagged container whose instance is gone is an orphan (Level 2: proposed, never run); a tagged one that
names no instance is reported and left alone; an untagged one is never seen. Level 1 repairs work as on the
local driver, with the container's own address as the instance's host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from services.adapters.proxmox_driver import ProxmoxDriver, description
from services.bootstrap import Container
from services.edge import Edge
from services.ports import InstanceSpec
from tests.fakes.proxmox_api import Container as FakeContainer
from tests.fakes.proxmox_cluster import FakeCluster, fake_cluster
from tests.integration.conftest import ADMIN_TOKEN, auth
from tests.integration.test_controller import (
    WORKERS,
    caught_up,
    controller,
    drop_srv,
    repair_rows,
    srv_name,
    wait_repair,
)
from tests.integration.test_lifecycle import running_instance
from tests.real_servers import cache_dir, install

# real_services: the fake Proxmox cluster over TLS, with agents on loopback addresses (not in make test-fast)
pytestmark = [pytest.mark.usefixtures("database_url"), pytest.mark.real_services]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    install("minecraft")
    with fake_cluster(tmp_path / "cluster", cache_dir=cache_dir()) as c:
        yield c


@pytest.fixture
def driver(cluster: FakeCluster) -> Iterator[ProxmoxDriver]:  # replaces the fake driver of make_container
    d = cluster.driver()
    yield d
    d.close()


def put(cluster: FakeCluster, vmid: int, config: dict[str, object]) -> FakeContainer:
    container = FakeContainer(vmid, "pve", {"hostname": f"ct{vmid}", "memory": 512, "cores": 1, **config})
    cluster.fake.containers[vmid] = container
    return container


def test_containers_are_observed_by_tag(make_container: Callable[..., Container], cluster: FakeCluster,
                                        edge: Edge) -> None:
    container = make_container(WORKERS)
    with TestClient(create_app(container)) as client:
        r = client.post("/api/admin/users", json={"email": "px@example.com"}, headers=auth(ADMIN_TOKEN))
        iid = running_instance(client, auth(r.json()["token"]))
    caught_up(container)
    (vmid,) = cluster.fake.containers
    ctl = controller(container, mode="live")
    assert ctl.tick().findings == ()  # the instance's container, its server and its edge agree with the log

    gone = uuid4()
    put(cluster, 10990, {"tags": "zlh;game", "description": description(InstanceSpec(gone, "game", "x", "x-1"))})
    put(cluster, 10991, {"tags": "zlh", "description": "made by hand"})
    foreign = put(cluster, 10992, {"description": f"zlh instance {gone}"})  # not tagged: not ours
    tasks = len(cluster.fake.tasks)
    result = ctl.tick()
    assert sorted((f.target, f.kind) for f in result.findings) == [
        ("container:10990", "orphan_container"), ("container:10991", "container_unclaimed")]
    rows = repair_rows(container)
    assert [(r["target"], r["kind"], r["status"], r["level"]) for r in rows] == [
        ("container:10990", "remove_orphan", "proposed", 2)]
    assert {10990, 10991, 10992} <= set(cluster.fake.containers) and foreign.config.get("tags") is None
    assert len(cluster.fake.tasks) == tasks  # nothing was started, stopped or destroyed

    # Level 1 as everywhere: a lost SRV record is published again, at the container's address.
    record = drop_srv(edge, iid)
    ctl.tick()
    assert wait_repair(container, "succeeded")["kind"] == "edge_republish"
    name = srv_name(edge, iid)
    restored = next(r for r in edge.dns.list_records() if r["name"] == name)
    assert restored["data"]["port"] == record["data"]["port"]
    ip = cluster.fake.containers[vmid].ip
    assert edge.proxy.list_servers()[next(iter(edge.proxy.list_servers()))] == \
        f"{ip}:{record['data']['port']}"
    assert UUID(iid) in {UUID(i) for i in container.driver.observe()["processes"]}
