"""End to end: a real `zlh serve` process and the real servers it runs, over HTTP and the Minecraft protocol."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.e2e.conftest import Server
from tests.real_servers import ping


def poll(fetch: Callable, done: Callable, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"timed out; last: {value!r}"
        time.sleep(0.05)


def new_customer(server: Server, email: str) -> httpx.Client:
    with server.client() as admin:
        r = admin.post("/api/admin/users", json={"email": email})
        assert r.status_code == 201, r.text
        return server.client(r.json()["token"])


def test_game_server_reaches_running_and_survives_a_restart(serve: Callable[..., Server], tmp_path: Path) -> None:
    server = serve()
    alice = new_customer(server, "alice@example.com")
    r = alice.post("/api/instances", json={"kind": "game", "name": "survival", "template": "minecraft"},
                   headers={"Idempotency-Key": "e2e-1"})
    assert r.status_code == 202, r.text
    accepted = r.json()
    operation = poll(lambda: alice.get(accepted["status_url"]).json(),
                     lambda op: op["phase"] in ("succeeded", "failed"))
    assert operation["phase"] == "succeeded", operation
    # Read models advance independently: the instance view may be a moment behind the operation's.
    instance = poll(lambda: alice.get(f"/api/instances/{accepted['instance_id']}").json(),
                    lambda i: i["status"] == "running")
    assert ping(instance["address"]).version.name == "1.21.4"  # a Minecraft server answers a client's ping

    edge = tmp_path / "data" / "edge"
    records = json.loads((edge / "dns.json").read_text())
    proxy = json.loads((edge / "proxy.json").read_text())
    port = int(instance["address"].rsplit(":", 1)[1])
    [record] = [r for r in records if r["name"].startswith("_minecraft._tcp.survival-")]
    assert record["type"] == "SRV" and record["data"]["port"] == port
    assert record["name"].endswith(".play.zlh.localhost")
    assert list(proxy.values()) == [instance["address"]]

    before = alice.get("/api/instances").json()
    alice.close()
    server.restart()
    with server.client(alice.headers["authorization"].split()[1]) as alice:
        assert alice.get("/api/instances").json() == before
        assert alice.get(accepted["status_url"]).json()["phase"] == "succeeded"
        assert ping(instance["address"]).version.protocol == 769
        # The replayed key still answers with the same ids after the restart.
        again = alice.post("/api/instances", json={"kind": "game", "name": "survival", "template": "minecraft"},
                           headers={"Idempotency-Key": "e2e-1"})
        assert again.status_code == 202 and again.json() == accepted
        assert again.headers["idempotent-replayed"] == "true"


def test_dev_container_serves_its_ide(serve: Callable[..., Server]) -> None:
    server = serve()
    with new_customer(server, "bob@example.com") as bob:
        check_dev_container(bob)


def check_dev_container(bob: httpx.Client) -> None:
    accepted = bob.post("/api/instances", json={"kind": "dev", "name": "workspace", "template": "python"},
                        headers={"Idempotency-Key": "dev-1"}).json()
    poll(lambda: bob.get(accepted["status_url"]).json(), lambda op: op["phase"] == "succeeded")
    address = poll(lambda: bob.get(f"/api/instances/{accepted['instance_id']}").json(),
                   lambda i: i["status"] == "running")["address"]
    assert address.startswith("http://127.0.0.1:")
    assert httpx.get(address, timeout=5).status_code == 200


def test_concurrent_duplicate_posts_create_exactly_one(serve: Callable[..., Server]) -> None:
    server = serve()
    with new_customer(server, "carol@example.com") as carol:
        check_duplicates(server, carol)


def check_duplicates(server: Server, carol: httpx.Client) -> None:
    token = carol.headers["authorization"]
    body = {"kind": "game", "name": "dup", "template": "minecraft"}

    def post(_: int) -> httpx.Response:
        return httpx.post(f"{server.url}/api/instances", json=body, timeout=60,
                          headers={"Authorization": token, "Idempotency-Key": "same-for-all"})

    with ThreadPoolExecutor(max_workers=24) as pool:
        responses = list(pool.map(post, range(24)))
    assert [r.status_code for r in responses] == [202] * 24, [r.text for r in responses if r.status_code != 202]
    assert len({r.json()["operation_id"] for r in responses}) == 1
    assert len({r.json()["instance_id"] for r in responses}) == 1
    assert sum(1 for r in responses if "idempotent-replayed" not in r.headers) == 1
    items = carol.get("/api/instances").json()["items"]
    assert len(items) == 1
    with server.client() as admin:
        stream = admin.get(f"/api/admin/streams/{items[0]['id']}/events").json()
        assert next(e["type"] for e in stream["events"]) == "zlh.Instance.Requested"
        assert sum(1 for e in stream["events"] if e["type"] == "zlh.Instance.Requested") == 1
