"""More than one host, for real: two network namespaces, each running `zlh agent` on its own address, and
the control plane (this process, SQLite) placing, watching and moving servers between them.

Needs root (CI runs as root); without it `HostNetwork` fails with `NetnsUnavailable` saying why, never skips.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from domain.node import LOCAL_NODE, node_id_for_name
from services.adapters.fake_edge import FakeDns, FakeProxy
from services.bootstrap import Container
from services.edge import Edge
from services.infrastructure.database import DatabaseURL
from services.infrastructure.migrations import migrate
from services.settings import Settings
from services.users import ensure_bootstrap_admin
from tests.integration.conftest import ADMIN_TOKEN, auth
from tests.netns import Host, HostNetwork

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
AGENT_PORT = 8700
SECRET = "netns-agent-secret"
ADMIN = auth(ADMIN_TOKEN)
T = TypeVar("T")

# A game server for the tests: answers each connection with its greeting and the address it listens on.
LINE_SERVER = r'''
import os, socket, sys, threading
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((os.environ["BIND"], int(os.environ["PORT"])))
listener.listen()
print("line ready on", os.environ["PORT"], flush=True)
def serve():
    while True:
        conn, _ = listener.accept()
        conn.sendall(f"hello from {os.environ['BIND']}\n".encode())
        conn.close()
threading.Thread(target=serve, daemon=True).start()
for line in sys.stdin:
    if line.strip() == "quit":
        sys.exit(0)
'''

TEMPLATE = f"""
kind = "game"
description = "a line server for the many-hosts tests"

[resources]
memory_mb = 64
cpus = 0.1
disk_mb = 10

[[install]]
write = "line.py"
content = '''{LINE_SERVER}'''

[start]
command = ["${{system_python}}", "-u", "${{cache}}/line.py"]
env = {{ PORT = "${{port}}", BIND = "${{bind}}" }}

[stop]
command = "quit"
timeout = 2

[ready]
check = "console"
pattern = "^line ready on \\\\d+$"
timeout = 20
"""


def eventually(fetch: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s; last: {result!r}")
        time.sleep(0.05)


def start_agent(host: Host, data: Path) -> subprocess.Popen[Any]:
    env = {**os.environ, "ZLH_AGENT_SECRET": SECRET, "ZLH_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)}
    proc = host.run([sys.executable, "-m", "api.cli", "agent", "--host", host.address, "--port", str(AGENT_PORT),
                     "--server-host", host.address], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    eventually(lambda: _health(host), bool, f"the agent on {host.name}")
    return proc


def _health(host: Host) -> bool:
    try:
        return httpx.get(f"http://{host.address}:{AGENT_PORT}/v1/health", timeout=1, trust_env=False,
                         headers={"Authorization": f"Bearer {SECRET}"}).status_code == 200
    except httpx.HTTPError:
        return False


def read_line(address: str) -> str:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=3) as conn:
        return conn.makefile().readline().strip()


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[HostNetwork, dict[str, subprocess.Popen[Any]]]]:
    with HostNetwork(["a", "b"]) as net:
        agents = {name: start_agent(net[name], tmp_path / name) for name in ("a", "b")}
        yield net, agents


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[Container, TestClient, Edge]]:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "line.toml").write_text(TEMPLATE)
    settings = Settings(database_url=f"sqlite:///{tmp_path}/zlh.sqlite3", data_dir=str(tmp_path / "plane"),
                        templates_dir=str(templates), node_probe_interval=0.2, node_unreachable_after=2.0,
                        provisioning_concurrency=4)
    migrate(DatabaseURL.parse(settings.database_url))
    edge = Edge(FakeDns(), FakeProxy(), settings.dns_zone)
    container = Container.build(settings, pool_size=4, edge=edge)
    ensure_bootstrap_admin(container.app, ADMIN_TOKEN)
    container.start(("projections", "provisioning", "notifications", "nodes"))
    with TestClient(create_app(container)) as client:
        yield container, client, edge
    container.close()


def add_node(client: TestClient, host: Host, memory_mb: int) -> dict:
    r = client.post("/api/admin/nodes", headers=ADMIN, json={
        "name": f"host-{host.name}", "agent_url": f"http://{host.address}:{AGENT_PORT}", "agent_secret": SECRET,
        "public_host": host.address, "memory_mb": memory_mb, "disk_mb": 1000, "cpus": 2,
        "port_range": "31000-31009"})
    assert r.status_code == 201, r.text
    return r.json()


def finished(client: TestClient, who: dict, operation_id: str, timeout: float = 60) -> dict:
    return eventually(lambda: client.get(f"/api/operations/{operation_id}", headers=who).json(),
                      lambda op: op["phase"] in ("succeeded", "failed"), f"operation {operation_id}", timeout)


def node_status(client: TestClient, node_id: str) -> dict:
    return client.get(f"/api/admin/nodes/{node_id}", headers=ADMIN).json()


def test_servers_are_placed_across_hosts_watched_and_moved(
        hosts: tuple[HostNetwork, dict[str, subprocess.Popen[Any]]], plane: tuple[Container, TestClient, Edge],
        tmp_path: Path) -> None:
    net, agents = hosts
    container, client, edge = plane
    client.post(f"/api/admin/nodes/{node_id_for_name(LOCAL_NODE)}/cordon", headers=ADMIN)
    a, b = add_node(client, net["a"], 128), add_node(client, net["b"], 128)  # room for two servers each
    alice = auth(client.post("/api/admin/users", headers=ADMIN, json={"email": "a@example.com"}).json()["token"])

    # Concurrent creates: four fit (two per host), the fifth is refused, nothing is overbooked.
    answers: list[dict] = []
    lock = threading.Lock()

    def create(n: int) -> None:
        r = client.post("/api/instances", headers={**alice, "Idempotency-Key": f"k{n}"},
                        json={"kind": "game", "name": f"s{n}", "template": "line"})
        assert r.status_code == 202, r.text
        with lock:
            answers.append(r.json())

    threads = [threading.Thread(target=create, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ops = {r["instance_id"]: finished(client, alice, r["operation_id"]) for r in answers}
    assert sorted(op["phase"] for op in ops.values()) == ["failed", "succeeded", "succeeded", "succeeded",
                                                          "succeeded"]
    assert [op["error"]["code"] for op in ops.values() if op["phase"] == "failed"] == ["no_capacity"]
    servers = [client.get(f"/api/instances/{i}", headers=ADMIN).json() for i, op in ops.items()
               if op["phase"] == "succeeded"]
    by_node: dict[str, list[dict]] = {}
    for s in servers:
        by_node.setdefault(s["node"], []).append(s)
    assert {k: len(v) for k, v in by_node.items()} == {"host-a": 2, "host-b": 2}
    for name, placed in by_node.items():
        host = net[name[-1]]
        assert len({s["port"] for s in placed}) == 2
        for s in placed:  # a server on host B answers at host B's address, from the control plane's host
            assert s["address"].startswith(f"{host.address}:")
            assert read_line(s["address"]) == f"hello from {host.address}"
    assert any(net["b"].address in str(r) for r in edge.dns.list_records())  # DNS points at host B

    # An agent killed: its node and its servers turn unreachable (one alert); a restart brings them back.
    on_a = by_node["host-a"][0]
    agents["a"].send_signal(signal.SIGKILL)
    agents["a"].wait(timeout=10)
    eventually(lambda: node_status(client, a["id"]), lambda n: n["status"] == "unreachable", "host-a unreachable")
    assert client.get(f"/api/instances/{on_a['id']}", headers=alice).json()["status"] == "unreachable"
    stop = client.post(f"/api/instances/{on_a['id']}/power", headers=alice, json={"action": "stop"}).json()
    failed = finished(client, alice, stop["operation_id"], timeout=10)
    assert failed["error"]["code"] == "node_unreachable"
    agents["a"] = start_agent(net["a"], tmp_path / "a")
    eventually(lambda: node_status(client, a["id"]), lambda n: n["status"] == "ready", "host-a back")
    assert client.get(f"/api/instances/{on_a['id']}", headers=alice).json()["status"] == "running"
    assert read_line(on_a["address"]) == f"hello from {net['a'].address}"  # it ran on while its agent was away
    events = [e["type"] for e in client.get(f"/api/admin/streams/{a['id']}/events", headers=ADMIN).json()["events"]]
    assert events.count("zlh.Node.BecameUnreachable") == 1 and events.count("zlh.Node.Recovered") == 1
    # down once, back once (the notifications worker records the second a moment after the recovery)
    eventually(lambda: int(container.db.query("SELECT COUNT(*) AS n FROM rm_deliveries "
                                              "WHERE kind = 'node_alert'")[0]["n"]), lambda n: n == 2, "two alerts")

    # A move from host A to host B keeps the files, and the server answers at host B's address.
    gone = by_node["host-b"][0]
    r = client.delete(f"/api/instances/{gone['id']}", headers=alice)
    assert finished(client, alice, r.json()["operation_id"])["phase"] == "succeeded"
    put = client.put(f"/api/instances/{on_a['id']}/files/content", params={"path": "/world/level.dat"},
                     content=b"the world", headers=alice)
    assert put.status_code == 204, put.text
    r = client.post(f"/api/admin/instances/{on_a['id']}/move", headers=ADMIN, json={"node": b["id"]})
    assert r.status_code == 202, r.text
    moved_op = finished(client, ADMIN, r.json()["operation_id"])
    assert moved_op["kind"] == "move" and moved_op["phase"] == "succeeded", moved_op
    moved = client.get(f"/api/instances/{on_a['id']}", headers=ADMIN).json()
    assert moved["node"] == "host-b" and moved["status"] == "running"
    assert read_line(moved["address"]) == f"hello from {net['b'].address}"
    assert client.get(f"/api/instances/{on_a['id']}/files/content", params={"path": "/world/level.dat"},
                      headers=alice).content == b"the world"
    assert not (tmp_path / "a" / "instances" / on_a["id"]).exists()  # the source is free
