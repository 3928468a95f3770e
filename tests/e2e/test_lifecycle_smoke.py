"""The integrated smoke test: a real `zlh serve` and a real `zlh agent`, over HTTP and WebSocket, on real servers.

Game (`minecraft`: flying-squid): create, a Minecraft Server List Ping answers, console round trip on the
server's own console, files, backup, restore, power, delete with full cleanup. Dev (`python`: JupyterLab):
create, the IDE answers at its address (with its token), files, power, delete. Security: the agent's
authentication, other customers' 404s, and no secret in any API response.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.conftest import ADMIN_TOKEN, Agent, Server
from tests.e2e.test_provisioning import new_customer, poll
from tests.real_servers import ping


class Recorder:
    """Wraps a client and keeps every response body, to check none carries a secret."""

    def __init__(self, client: httpx.Client) -> None:
        self.client, self.bodies = client, []

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *_: object) -> None:
        self.client.close()

    def __getattr__(self, method: str):  # type: ignore[no-untyped-def]
        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            response = getattr(self.client, method)(*args, **kwargs)
            self.bodies.append(response.content + str(response.headers).encode())
            return response

        return call


def finish(customer: Recorder, response: httpx.Response) -> dict:
    assert response.status_code == 202, response.text
    return poll(lambda: customer.get(response.json()["status_url"]).json(),
                lambda op: op["phase"] in ("succeeded", "failed"))


def settled(customer: Recorder, iid: str, status: str) -> dict:
    return poll(lambda: customer.get(f"/api/instances/{iid}").json(),
                lambda i: i["status"] == status and i["pending_operation_id"] is None)


def accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def console_round_trip(customer: Recorder, iid: str, text: str) -> None:
    ticket = customer.post(f"/api/instances/{iid}/console")
    assert ticket.status_code == 201, ticket.text
    url = ticket.json()["url"]
    with connect(url, open_timeout=15) as ws:
        ws.send(f"say {text}")
        poll(lambda: ws.recv(timeout=10), lambda line: text in line, timeout=30)
    # The ticket was single use: reusing it is refused with a clear close code.
    with connect(url, open_timeout=15) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_game_lifecycle_smoke(serve: Callable[..., Server], agent: Agent, tmp_path: Path) -> None:
    server = serve(ZLH_AGENT_URL=agent.url, ZLH_AGENT_SECRET=agent.secret)
    with Recorder(new_customer(server, "alice@example.com")) as alice, \
            Recorder(new_customer(server, "bob@example.com")) as bob:
        check_game_lifecycle(alice, bob, agent, tmp_path)


def check_game_lifecycle(alice: Recorder, bob: Recorder, agent: Agent, tmp_path: Path,
                         after_delete: Callable[[str, str], None] | None = None) -> None:
    """The game lifecycle; `after_delete(instance_id, backup_id)` checks what the driver left behind
    (default: the local driver's files)."""
    created = alice.post("/api/instances", json={"kind": "game", "name": "smoke", "template": "minecraft"},
                         headers={"Idempotency-Key": "smoke"})
    assert finish(alice, created)["phase"] == "succeeded"
    iid = created.json()["instance_id"]
    instance = settled(alice, iid, "running")
    address = instance["address"]
    assert ping(address).version.name == "1.21.4"  # a Minecraft client would see this server

    console_round_trip(alice, iid, "hello-from-smoke")

    content = f"/api/instances/{iid}/files/content"
    assert alice.put(content, params={"path": "/notes.txt"}, content=b"original").status_code == 204
    listing = alice.get(f"/api/instances/{iid}/files", params={"path": "/"}).json()
    assert {"name": "notes.txt", "type": "file", "size": 8} in listing["entries"]
    backup = alice.post(f"/api/instances/{iid}/backups")
    assert finish(alice, backup)["phase"] == "succeeded"
    backup_id = backup.json()["backup_id"]
    alice.put(content, params={"path": "/notes.txt"}, content=b"changed")
    restore = alice.post(f"/api/instances/{iid}/backups/{backup_id}/restore")
    assert finish(alice, restore)["phase"] == "succeeded"
    assert alice.get(content, params={"path": "/notes.txt"}).content == b"original"
    settled(alice, iid, "running")
    assert alice.get(content, params={"path": "/../../etc/passwd"}).json()["code"] == "bad_path"

    # A console open while the server stops is closed by the server, with a clear code.
    with connect(alice.post(f"/api/instances/{iid}/console").json()["url"], open_timeout=15) as ws:
        assert finish(alice, alice.post(f"/api/instances/{iid}/power", json={"action": "stop"}))["phase"] == \
            "succeeded"
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4410
    settled(alice, iid, "stopped")
    assert not accepts(address)
    for action in ("start", "restart"):
        assert finish(alice, alice.post(f"/api/instances/{iid}/power", json={"action": action}))["phase"] == \
            "succeeded"
        settled(alice, iid, "running")
        assert ping(address).version.protocol == 769
    console_round_trip(alice, iid, "after-restart")  # the console works again after a restart

    for method, url in (("get", f"/api/instances/{iid}"), ("post", f"/api/instances/{iid}/console"),
                        ("get", f"/api/instances/{iid}/files"), ("delete", f"/api/instances/{iid}")):
        assert getattr(bob, method)(url).status_code == 404

    assert finish(alice, alice.delete(f"/api/instances/{iid}"))["phase"] == "succeeded"
    settled(alice, iid, "deleted")
    edge = tmp_path / "data" / "edge"
    assert json.loads((edge / "dns.json").read_text()) == []
    assert json.loads((edge / "proxy.json").read_text()) == {}
    assert not accepts(address)
    if after_delete is not None:
        after_delete(iid, backup_id)
    else:
        assert not (tmp_path / "data" / "instances" / iid).exists()
        assert (tmp_path / "data" / "backups" / f"{backup_id}.tar.gz").exists()  # backups are kept by default

    for body in alice.bodies + bob.bodies:
        assert agent.secret.encode() not in body and agent.url.encode() not in body


def test_dev_lifecycle_smoke(serve: Callable[..., Server], agent: Agent) -> None:
    server = serve(ZLH_AGENT_URL=agent.url, ZLH_AGENT_SECRET=agent.secret)
    with Recorder(new_customer(server, "carol@example.com")) as carol:
        check_dev_lifecycle(carol)


def check_dev_lifecycle(carol: Recorder) -> None:
    created = carol.post("/api/instances", json={"kind": "dev", "name": "ide", "template": "python"},
                         headers={"Idempotency-Key": "dev"})
    assert finish(carol, created)["phase"] == "succeeded"
    iid = created.json()["instance_id"]
    url = settled(carol, iid, "running")["address"]
    assert "/lab?token=" in url
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200 and "JupyterLab" in page.text
    assert httpx.get(url.split("/lab?")[0] + "/api/contents", timeout=10).status_code == 403  # no token, no files
    content = f"/api/instances/{iid}/files/content"
    assert carol.put(content, params={"path": "/analysis.py"}, content=b"print(6 * 7)\n").status_code == 204
    token = url.split("token=", 1)[1]
    listing = httpx.get(url.split("/lab?")[0] + "/api/contents", params={"token": token}, timeout=10).json()
    assert [c["name"] for c in listing["content"]] == ["analysis.py"]  # the IDE works on the instance's files
    for action, status in (("stop", "stopped"), ("start", "running"), ("restart", "running")):
        assert finish(carol, carol.post(f"/api/instances/{iid}/power", json={"action": action}))["phase"] == \
            "succeeded"
        settled(carol, iid, status)
        if status == "running":
            assert httpx.get(url, timeout=10).status_code == 200
        else:
            with pytest.raises(httpx.HTTPError):
                httpx.get(url, timeout=2)
    assert finish(carol, carol.delete(f"/api/instances/{iid}"))["phase"] == "succeeded"
    settled(carol, iid, "deleted")
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, timeout=2)


def test_agent_fails_closed(agent: Agent, tmp_path: Path) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": agent.secret}):
        response = httpx.get(f"{agent.url}/v1/health", headers=headers, timeout=5)
        assert response.status_code == 401
        assert agent.secret not in response.text
    assert httpx.get(f"{agent.url}/v1/health", headers={"Authorization": f"Bearer {agent.secret}"},
                     timeout=5).status_code == 200
    import os
    import subprocess
    import sys

    from tests.e2e.conftest import ROOT

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ZLH_")}, "PYTHONPATH": str(ROOT)}
    refused = subprocess.run([sys.executable, "-m", "api.cli", "agent", "--port", "0"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "ZLH_AGENT_SECRET" in refused.stderr


def test_admin_token_is_not_echoed(serve: Callable[..., Server], agent: Agent) -> None:
    server = serve(ZLH_AGENT_URL=agent.url, ZLH_AGENT_SECRET=agent.secret)
    with server.client() as admin:
        for url in ("/api/me", "/api/admin/projections", "/openapi.json", "/api/instances"):
            assert ADMIN_TOKEN not in admin.get(url).text
