"""Nodes through the HTTP API, on fake agents: registration, placement, capacity, health, moves."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from domain.node import LOCAL_NODE, node_id_for_name
from services.adapters.fake_driver import FakeDriver
from services.bootstrap import Container
from tests.integration.conftest import ADMIN_TOKEN, auth, poll
from tests.integration.test_api import assert_problem

ADMIN = auth(ADMIN_TOKEN)


class Fleet:
    """One FakeDriver per agent URL: what `Container.node_driver_factory` hands the router."""

    def __init__(self) -> None:
        self.drivers: dict[str, FakeDriver] = {}
        self.down: set[str] = set()
        self.secrets: dict[str, str] = {}

    def __call__(self, url: str, secret: str) -> Any:
        self.secrets[url] = secret
        fleet = self

        class Agent(FakeDriver):
            def health(self) -> dict[str, Any]:
                from services.ports import DriverError

                if url in fleet.down:
                    raise DriverError("agent_unreachable", "down")
                return {"status": "ok"}

        return self.drivers.setdefault(url, Agent(host=url.split("//")[1].split(":")[0]))


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


@pytest.fixture
def nodes_container(make_container: Callable[..., Container], fleet: Fleet) -> Container:
    container = make_container(workers=("projections", "provisioning", "notifications"),
                               node_probe_interval=0.05, node_unreachable_after=0.3,
                               node_secret_key=None)
    container.node_driver_factory = fleet
    container.driver.factory = fleet  # the router the workers already hold
    return container


@pytest.fixture
def nclient(nodes_container: Container) -> Iterator[TestClient]:
    from api.app import create_app

    with TestClient(create_app(nodes_container)) as c:
        yield c


def add_node(client: TestClient, name: str, memory_mb: int = 4096, ports: str = "30000-30009",
             host: str | None = None) -> dict:
    r = client.post("/api/admin/nodes", headers=ADMIN, json={
        "name": name, "agent_url": f"http://{host or name}.example:8700", "agent_secret": f"secret-of-{name}",
        "public_host": host or f"{name}.example", "memory_mb": memory_mb, "disk_mb": 100_000, "cpus": 8,
        "port_range": ports})
    assert r.status_code == 201, r.text
    return r.json()


def customer(client: TestClient, email: str) -> dict[str, str]:
    r = client.post("/api/admin/users", headers=ADMIN, json={"email": email})
    return auth(r.json()["token"])


def create(client: TestClient, who: dict, name: str, template: str = "minecraft") -> dict:
    r = client.post("/api/instances", headers={**who, "Idempotency-Key": name},
                    json={"kind": "game", "name": name, "template": template})
    assert r.status_code == 202, r.text
    return r.json()


def finished(client: TestClient, who: dict, operation_id: str) -> dict:
    return poll(lambda: client.get(f"/api/operations/{operation_id}", headers=who).json(),
                lambda op: op["phase"] in ("succeeded", "failed"))


def only_local_busy(client: TestClient) -> None:
    local = node_id_for_name(LOCAL_NODE)
    assert client.post(f"/api/admin/nodes/{local}/cordon", headers=ADMIN).status_code == 200


def test_nodes_are_added_listed_cordoned_and_never_show_their_secret(nclient: TestClient, fleet: Fleet) -> None:
    node = add_node(nclient, "alpha")
    assert node["status"] == "ready" and node["capacity"]["memory_mb"] == 4096 and node["instances"] == 0
    listed = nclient.get("/api/admin/nodes", headers=ADMIN)
    assert listed.status_code == 200 and {n["name"] for n in listed.json()["items"]} == {"alpha", LOCAL_NODE}
    assert "secret-of-alpha" not in listed.text and "agent_secret" not in listed.text
    assert nclient.post(f"/api/admin/nodes/{node['id']}/cordon", headers=ADMIN).json()["status"] == "cordoned"
    assert nclient.post(f"/api/admin/nodes/{node['id']}/uncordon", headers=ADMIN).json()["status"] == "ready"
    assert_problem(nclient.post("/api/admin/nodes", headers=ADMIN, json={
        "name": "alpha", "agent_url": "http://x:1", "agent_secret": "s", "public_host": "x", "memory_mb": 1,
        "disk_mb": 1, "cpus": 1, "port_range": "30000-30001"}), 409, "name_taken")
    stream = nclient.get(f"/api/admin/streams/{node['id']}/events", headers=ADMIN).text
    assert "secret-of-alpha" not in stream  # encrypted in the log
    alice = customer(nclient, "alice@example.com")
    assert_problem(nclient.get("/api/admin/nodes", headers=alice), 403, "forbidden")


def test_placement_spreads_refuses_when_full_and_releases(nclient: TestClient, nodes_container: Container) -> None:
    only_local_busy(nclient)
    a, b = add_node(nclient, "alpha", memory_mb=2048), add_node(nclient, "beta", memory_mb=2048)
    alice = customer(nclient, "alice@example.com")
    ops = [create(nclient, alice, f"s{n}") for n in range(2)]
    placed = []
    for op in ops:
        assert finished(nclient, alice, op["operation_id"])["phase"] == "succeeded"
        placed.append(nclient.get(f"/api/instances/{op['instance_id']}", headers=ADMIN).json())
    assert {p["node"] for p in placed} == {"alpha", "beta"}  # spread, one each
    assert all(30000 <= p["port"] <= 30009 for p in placed)
    assert any(p["address"].startswith("alpha.example:") for p in placed)
    # minecraft takes 1024 MB: two more fill both nodes, the fifth has nowhere to go
    for n in (2, 3):
        assert finished(nclient, alice, create(nclient, alice, f"s{n}")["operation_id"])["phase"] == "succeeded"
    full = create(nclient, alice, "s4")
    failed = finished(nclient, alice, full["operation_id"])
    assert failed["phase"] == "failed" and failed["error"]["code"] == "no_capacity"
    nodes = {n["name"]: n for n in nclient.get("/api/admin/nodes", headers=ADMIN).json()["items"]}
    assert nodes["alpha"]["instances"] == 2 and nodes["alpha"]["allocated"]["memory_mb"] == 2048
    assert nodes["beta"]["instances"] == 2
    assert_problem(nclient.delete(f"/api/admin/nodes/{a['id']}", headers=ADMIN), 409, "node_not_empty")
    poll(lambda: nodes_container.db.query("SELECT COUNT(*) AS n FROM rm_deliveries WHERE kind = 'capacity_alert'"),
         lambda rows: int(rows[0]["n"]) == 1)  # staff are told
    # deleting one frees its room: the next create fits again
    first = placed[0]
    r = nclient.delete(f"/api/instances/{first['id']}", headers=alice)
    assert finished(nclient, alice, r.json()["operation_id"])["phase"] == "succeeded"
    assert finished(nclient, alice, create(nclient, alice, "s5")["operation_id"])["phase"] == "succeeded"
    assert b["id"] != a["id"]


def test_concurrent_creates_never_overbook(nclient: TestClient, nodes_container: Container) -> None:
    only_local_busy(nclient)
    add_node(nclient, "alpha", memory_mb=3072, ports="30000-30099")
    alice = customer(nclient, "alice@example.com")
    ops: list[dict] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        body = create(nclient, alice, f"c{n}")
        with lock:
            ops.append(body)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phases = [finished(nclient, alice, op["operation_id"]) for op in ops]
    assert sorted(p["phase"] for p in phases).count("succeeded") == 3
    ports = [nclient.get(f"/api/instances/{op['instance_id']}", headers=ADMIN).json()["port"] for op, p in
             zip(ops, phases, strict=True) if p["phase"] == "succeeded"]
    assert len(set(ports)) == 3


def test_unreachable_node_fails_fast_alerts_once_and_comes_back(
        nclient: TestClient, nodes_container: Container, fleet: Fleet) -> None:
    only_local_busy(nclient)
    node = add_node(nclient, "alpha")
    alice = customer(nclient, "alice@example.com")
    made = create(nclient, alice, "s1")
    assert finished(nclient, alice, made["operation_id"])["phase"] == "succeeded"
    nodes_container.start(("nodes",))
    poll(lambda: nclient.get(f"/api/admin/nodes/{node['id']}", headers=ADMIN).json(),
         lambda n: n["last_seen"] is not None)
    fleet.down.add("http://alpha.example:8700")
    poll(lambda: nclient.get(f"/api/admin/nodes/{node['id']}", headers=ADMIN).json(),
         lambda n: n["status"] == "unreachable")
    assert nclient.get(f"/api/instances/{made['instance_id']}", headers=alice).json()["status"] == "unreachable"
    seen = nodes_container.driver.observe()  # what the controller sees: the server as it was, nothing to repair
    assert made["instance_id"] in seen["processes"] and made["instance_id"] in seen["directories"]
    from tests.integration.test_controller import controller

    fleet.drivers["http://alpha.example:8700"].processes.clear()  # even were it really down, nothing is proposed
    plan = controller(nodes_container).tick()
    assert plan is not None and not [p for p in plan.proposals if p.instance_id == UUID(made["instance_id"])]
    assert_problem(nclient.get(f"/api/instances/{made['instance_id']}/files", headers=alice), 503,
                   "node_unreachable")
    stop = nclient.post(f"/api/instances/{made['instance_id']}/power", headers=alice, json={"action": "stop"})
    failed = finished(nclient, alice, stop.json()["operation_id"])
    assert failed["phase"] == "failed" and failed["error"]["code"] == "node_unreachable"
    fleet.down.clear()
    poll(lambda: nclient.get(f"/api/admin/nodes/{node['id']}", headers=ADMIN).json(),
         lambda n: n["status"] == "ready")
    assert nclient.get(f"/api/instances/{made['instance_id']}", headers=alice).json()["status"] == "running"
    events = [e["type"] for e in nclient.get(f"/api/admin/streams/{node['id']}/events",
                                             headers=ADMIN).json()["events"]]
    assert events.count("zlh.Node.BecameUnreachable") == 1 and events.count("zlh.Node.Recovered") == 1
    poll(lambda: nodes_container.db.query("SELECT COUNT(*) AS n FROM rm_deliveries WHERE kind = 'node_alert'"),
         lambda rows: int(rows[0]["n"]) == 2)  # one alert when it went, one when it came back


def test_move_keeps_files_and_a_failed_move_leaves_the_server_on_its_source(
        nclient: TestClient, fleet: Fleet) -> None:
    only_local_busy(nclient)
    a = add_node(nclient, "alpha")
    alice = customer(nclient, "alice@example.com")
    made = create(nclient, alice, "s1")
    assert finished(nclient, alice, made["operation_id"])["phase"] == "succeeded"
    iid = made["instance_id"]
    assert nclient.put(f"/api/instances/{iid}/files/content", params={"path": "/world.txt"}, content=b"hello",
                       headers=alice).status_code == 204
    b = add_node(nclient, "beta")
    fleet.drivers.setdefault("http://beta.example:8700", fleet("http://beta.example:8700", "x"))
    from services.ports import DriverError

    fleet.drivers["http://beta.example:8700"].fail_on["install"] = DriverError("install_failed", "no")
    r = nclient.post(f"/api/admin/instances/{iid}/move", headers=ADMIN, json={"node": b["id"]})
    assert r.status_code == 202, r.text
    bad = finished(nclient, ADMIN, r.json()["operation_id"])
    assert bad["phase"] == "failed" and bad["error"]["code"] == "install_failed"
    after = nclient.get(f"/api/instances/{iid}", headers=ADMIN).json()
    assert after["node"] == "alpha" and after["status"] == "running"
    assert nclient.get(f"/api/instances/{iid}/files/content", params={"path": "/world.txt"},
                       headers=alice).content == b"hello"
    del fleet.drivers["http://beta.example:8700"].fail_on["install"]
    r = nclient.post(f"/api/admin/instances/{iid}/move", headers=ADMIN, json={"node": b["id"]})
    op = finished(nclient, ADMIN, r.json()["operation_id"])
    assert op["kind"] == "move" and op["phase"] == "succeeded", op
    moved = nclient.get(f"/api/instances/{iid}", headers=ADMIN).json()
    assert moved["node"] == "beta" and moved["status"] == "running" and moved["address"].startswith("beta.example:")
    assert nclient.get(f"/api/instances/{iid}/files/content", params={"path": "/world.txt"},
                       headers=alice).content == b"hello"
    nodes = {n["name"]: n for n in nclient.get("/api/admin/nodes", headers=ADMIN).json()["items"]}
    assert nodes["alpha"]["instances"] == 0 and nodes["beta"]["instances"] == 1
    assert nclient.delete(f"/api/admin/nodes/{a['id']}", headers=ADMIN).status_code == 204
    # and home again, to the embedded node, stopped this time
    stop = nclient.post(f"/api/instances/{iid}/power", headers=alice, json={"action": "stop"}).json()
    assert finished(nclient, alice, stop["operation_id"])["phase"] == "succeeded"
    local = str(node_id_for_name(LOCAL_NODE))
    nclient.post(f"/api/admin/nodes/{local}/uncordon", headers=ADMIN)
    r = nclient.post(f"/api/admin/instances/{iid}/move", headers=ADMIN, json={"node": local})
    assert finished(nclient, ADMIN, r.json()["operation_id"])["phase"] == "succeeded"
    home = nclient.get(f"/api/instances/{iid}", headers=ADMIN).json()
    assert home["node"] == LOCAL_NODE and home["status"] == "stopped" and home["address"].startswith("127.0.0.1:")
    assert nclient.get(f"/api/instances/{iid}/files/content", params={"path": "/world.txt"},
                       headers=alice).content == b"hello"
    assert_problem(nclient.post(f"/api/admin/instances/{iid}/move", headers=ADMIN, json={"node": local}),
                   422, "validation_error")
    assert_problem(nclient.post(f"/api/admin/instances/{iid}/move", headers=ADMIN, json={"node": iid}),
                   404, "not_found")


def test_a_refused_node_never_echoes_its_secret(nclient: TestClient) -> None:
    for body in ({"name": "Bad Name"}, {"memory_mb": -1}, {"port_range": "1-2"}, {"extra": 1}):
        r = nclient.post("/api/admin/nodes", headers=ADMIN, json={
            "name": "gamma", "agent_url": "http://gamma:1", "agent_secret": "never-echo-this", "public_host": "g",
            "memory_mb": 1, "disk_mb": 1, "cpus": 1, "port_range": "30000-30001", **body})
        assert r.status_code == 422 and "never-echo-this" not in r.text, r.text
