"""Real servers through a real `zlh serve`: a Minecraft client joins, chats, and its line is on the console.

The `minecraft` template runs flying-squid; `mcstatus` pings the address the API gives, and a real
mineflayer bot (npm, installed once into the shared test cache) joins in offline mode and says a
line, which arrives on the console WebSocket the portal uses. SQLite only: the store is not what
these tests are about (the lifecycle smoke test runs on both).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.e2e.conftest import Server
from tests.e2e.test_lifecycle_smoke import Recorder, finish, settled
from tests.e2e.test_provisioning import new_customer, poll
from tests.real_servers import mineflayer, ping, run_bot


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_minecraft_client_joins_and_what_it_says_shows_on_the_console(
        serve: Callable[..., Server], tmp_path: Path) -> None:
    mineflayer()  # installed (once per cache) before anything is timed
    server = serve()
    with Recorder(new_customer(server, "player@example.com")) as alice:
        body = {"kind": "game", "name": "world", "template": "minecraft",
                "variables": {"motd": "ZLH end-to-end", "max_players": 5, "online_mode": False}}
        created = alice.post("/api/instances", json=body, headers={"Idempotency-Key": "world"})
        assert finish(alice, created)["phase"] == "succeeded"
        iid = created.json()["instance_id"]
        address = settled(alice, iid, "running")["address"]

        status = ping(address)
        assert status.motd.to_plain() == "ZLH end-to-end"
        assert (status.version.name, status.players.online, status.players.max) == ("1.21.4", 0, 5)

        line = f"hello from mineflayer {uuid.uuid4().hex[:8]}"
        ticket = alice.post(f"/api/instances/{iid}/console").json()
        with connect(ticket["url"], open_timeout=15) as ws:
            poll(lambda: ws.recv(timeout=10), lambda text: text.startswith("[ZLH] ready"))  # scroll-back first
            events: list[dict] = []
            host, port = address.rsplit(":", 1)
            bot = threading.Thread(target=lambda: events.extend(run_bot(host, int(port), "zlhbot", line)))
            bot.start()
            poll(lambda: ws.recv(timeout=30), lambda text: text.endswith(f"<zlhbot> {line}"), timeout=60)
            bot.join(timeout=60)
            assert [e["event"] for e in events if e["event"] in ("login", "spawn", "sent", "end")] == \
                ["login", "spawn", "sent", "end"]
            assert any(e["event"] == "chat" and line in e["text"] for e in events)  # the server echoed it back
            ws.send("list")
            poll(lambda: ws.recv(timeout=10), lambda text: text.startswith("[ZLH] players online="))

        # The player's data was saved when the bot left: the server's own files, in the customer's files.
        players = alice.get(f"/api/instances/{iid}/files", params={"path": "/world/playerdata"}).json()
        assert [e["name"] for e in players["entries"] if e["name"].endswith(".dat")]

        assert finish(alice, alice.delete(f"/api/instances/{iid}"))["phase"] == "succeeded"
        settled(alice, iid, "deleted")
        with pytest.raises(OSError):
            ping(address, timeout=2)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_templates_and_their_variables_through_the_api(serve: Callable[..., Server]) -> None:
    server = serve()
    with new_customer(server, "picky@example.com") as bob:
        items = {t["name"]: t for t in bob.get("/api/templates").json()["items"]}
        assert {"minecraft", "paper", "python", "node"} <= set(items)
        motd = next(v for v in items["minecraft"]["variables"] if v["name"] == "motd")
        assert motd["constraints"]["max_length"] == 59
        assert items["paper"]["available"] is False  # no jar configured by the operator
        too_long = {"kind": "game", "name": "loud", "template": "minecraft", "variables": {"motd": "x" * 60}}
        refused = bob.post("/api/instances", json=too_long, headers={"Idempotency-Key": "loud"})
        assert refused.status_code == 422 and refused.json()["code"] == "validation_error"
        assert refused.json()["field"] == "variables.motd" and "variables.motd" in refused.json()["detail"]
        assert bob.get("/api/instances").json()["items"] == []
