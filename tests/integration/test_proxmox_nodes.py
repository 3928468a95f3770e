"""`ZLH_DRIVER=proxmox` with the control plane's nodes: each PVE node of `ZLH_PROXMOX_NODES` is a node
(`proxmox://NODE`), `place` chooses among them by the usual rules, and the container is created on the
node the instance was placed on. Against `FakeProxmox` (HTTPS, two nodes) whose containers boot real
agents and servers; the monitor's health probe asks the PVE API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from domain.node import LOCAL_NODE
from services.adapters.proxmox_driver import ProxmoxDriver
from services.bootstrap import Container
from tests.fakes.proxmox_cluster import NODES, FakeCluster, fake_cluster
from tests.integration.conftest import ADMIN_TOKEN, auth, poll
from tests.integration.test_api import assert_problem
from tests.integration.test_nodes import create, customer, finished
from tests.real_servers import cache_dir, install

# real_services: the fake Proxmox cluster over TLS, with agents on loopback addresses (not in make test-fast)
pytestmark = [pytest.mark.usefixtures("database_url"), pytest.mark.real_services]
ADMIN = auth(ADMIN_TOKEN)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    with fake_cluster(tmp_path / "cluster", cache_dir=cache_dir()) as c:
        yield c


@pytest.fixture
def driver(cluster: FakeCluster) -> Iterator[ProxmoxDriver]:  # replaces the fake driver of make_container
    d = cluster.driver()
    yield d
    d.close()


def proxmox_container(make_container: Callable[..., Container], workers: tuple[str, ...],
                      **overrides: Any) -> Container:
    return make_container(workers, driver="proxmox", proxmox_nodes=",".join(NODES), **overrides)


def listed(client: TestClient) -> dict[str, dict]:
    return {n["name"]: n for n in client.get("/api/admin/nodes", headers=ADMIN).json()["items"]}


def test_pve_nodes_are_the_nodes_and_their_health_is_the_apis(
        make_container: Callable[..., Container], cluster: FakeCluster) -> None:
    container = proxmox_container(make_container, ("projections", "nodes"), node_probe_interval=0.05,
                                  node_unreachable_after=1.5, proxmox_node_memory="2GiB")
    container.ensure_local_node()  # a second start: idempotent
    with TestClient(create_app(container)) as client:
        nodes = poll(lambda: listed(client), lambda n: set(n) == set(NODES))
        assert LOCAL_NODE not in nodes  # the embedded node takes no part
        assert {n["agent_url"] for n in nodes.values()} == {f"proxmox://{n}" for n in NODES}
        assert nodes["pve"]["capacity"]["memory_mb"] == 2048
        poll(lambda: listed(client), lambda n: all(v["last_seen"] for v in n.values()))
        cluster.fake.offline.add("pve2")  # the host is down: the API says so
        poll(lambda: listed(client), lambda n: n["pve2"]["status"] == "unreachable")
        cluster.fake.offline.clear()
        poll(lambda: listed(client), lambda n: n["pve2"]["status"] == "ready" and n["pve"]["status"] == "ready")
        events = [e["type"] for e in client.get(f"/api/admin/streams/{nodes['pve2']['id']}/events",
                                                 headers=ADMIN).json()["events"]]
        assert events.count("zlh.Node.Registered") == 1 and "zlh.Node.BecameUnreachable" in events
        assert events[-1] == "zlh.Node.Recovered"


def test_placement_over_pve_nodes_cordon_and_capacity(
        make_container: Callable[..., Container], cluster: FakeCluster) -> None:
    install("minecraft")  # 1024 MB: one per node at this capacity
    container = proxmox_container(make_container, ("projections", "provisioning"), proxmox_node_memory="1GiB")
    with TestClient(create_app(container)) as client:
        nodes = poll(lambda: listed(client), lambda n: set(n) == set(NODES))
        alice = customer(client, "alice@example.com")
        assert client.post(f"/api/admin/nodes/{nodes['pve2']['id']}/cordon", headers=ADMIN).status_code == 200

        first = create(client, alice, "s0")
        assert finished(client, alice, first["operation_id"])["phase"] == "succeeded"
        assert {c.node for c in cluster.fake.containers.values()} == {"pve"}  # the cordoned node got nothing
        refused = finished(client, alice, create(client, alice, "s1")["operation_id"])
        assert refused["phase"] == "failed" and refused["error"]["code"] == "no_capacity"
        assert len(cluster.fake.containers) == 1  # nothing was created for it

        assert client.post(f"/api/admin/nodes/{nodes['pve2']['id']}/uncordon", headers=ADMIN).status_code == 200
        second = create(client, alice, "s2")
        assert finished(client, alice, second["operation_id"])["phase"] == "succeeded"
        assert sorted(c.node for c in cluster.fake.containers.values()) == ["pve", "pve2"]  # one on each
        placed = {client.get(f"/api/instances/{op['instance_id']}", headers=ADMIN).json()["node"]
                  for op in (first, second)}
        assert placed == {"pve", "pve2"}  # where the control plane placed them is where the containers are

        full = finished(client, alice, create(client, alice, "s3")["operation_id"])
        assert full["phase"] == "failed" and full["error"]["code"] == "no_capacity"
        assert len(cluster.fake.containers) == 2
        seen = container.driver.observe()
        assert {first["instance_id"], second["instance_id"]} <= set(seen["processes"])
        assert {c["node"] for c in seen["containers"]} == {"pve", "pve2"}
        moved = client.post(f"/api/admin/instances/{first['instance_id']}/move", headers=ADMIN,
                            json={"node": nodes["pve2"]["id"]})  # not on Proxmox yet: refused, nothing queued
        assert_problem(moved, 422, "validation_error")

        # pve2 goes silent (as the monitor would record it): its server is taken to be as it was, even gone
        vmid = next(v for v, c in cluster.fake.containers.items() if c.node == "pve2")
        cluster.node(vmid).kill_all()
        poll(container.driver.observe, lambda seen: second["instance_id"] not in seen["processes"])
        pve2 = container.app.repository.get(UUID(nodes["pve2"]["id"]))
        assert pve2.mark_unreachable(None)
        container.app.save(pve2)
        poll(lambda: listed(client), lambda n: n["pve2"]["status"] == "unreachable")
        seen = container.driver.observe()
        assert {first["instance_id"], second["instance_id"]} <= set(seen["processes"])
