"""End to end: the controller inside a real `zlh serve`, with Redis for its leader lock."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Server
from tests.e2e.test_provisioning import new_customer, poll

GAME = {"kind": "game", "name": "mc", "template": "minecraft"}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_killed_worker_leaves_a_stale_operation_the_controller_clears(
    serve: Callable[..., Server], redis_test_url: str, tmp_path: Path
) -> None:
    # A step takes 30 s: the server is killed in the middle of one.
    server = serve(ZLH_LOCAL_STEP_DELAY="30s", ZLH_REDIS_URL=redis_test_url)
    with new_customer(server, "stale@example.com") as alice:
        created = alice.post("/api/instances", json=GAME, headers={"Idempotency-Key": "k1"}).json()
        poll(lambda: alice.get(created["status_url"]).json(), lambda op: op["phase"] == "running")
        server.stop(signal.SIGKILL)
        server.env.update(ZLH_LOCAL_STEP_DELAY="0s", ZLH_CONTROLLER_MODE="live", ZLH_CONTROLLER_INTERVAL="0.5s",
                          ZLH_OPERATION_STALE_AFTER="2s", ZLH_CONTROLLER_LEASE="5s")
        server.start()
        op = poll(lambda: alice.get(created["status_url"]).json(), lambda op: op["phase"] == "failed")
        assert op["error"]["code"] == "interrupted"
        instance = poll(lambda: alice.get(f"/api/instances/{created['instance_id']}").json(),
                        lambda i: i["pending_operation_id"] is None)
        assert instance["status"] == "failed"  # a create that never finished; the customer may delete it
        with server.client() as admin:
            repairs = admin.get("/api/admin/repairs").json()
            cleared = [r for r in repairs["items"] if r["kind"] == "clear_stale_operation_lock"]
            assert [(r["status"], r["mode"], r["level"]) for r in cleared] == [("succeeded", "live", 1)]
            assert repairs["controller"]["state"] == "leader"
            assert admin.get("/readyz").json()["controller"]["epoch"] >= 1

        # Live mode: an SRV record deleted by hand is published again.
        second = alice.post("/api/instances", json={**GAME, "name": "mc2"}, headers={"Idempotency-Key": "k2"}).json()
        poll(lambda: alice.get(second["status_url"]).json(), lambda op: op["phase"] == "succeeded")
        dns_file = tmp_path / "data" / "edge" / "dns.json"
        records = json.loads(dns_file.read_text())
        assert len(records) == 1
        dns_file.write_text(json.dumps([]))
        restored = poll(lambda: json.loads(dns_file.read_text()), lambda r: len(r) == 1)
        assert restored[0]["name"] == records[0]["name"] and restored[0]["data"] == records[0]["data"]
