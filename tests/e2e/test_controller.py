"""End to end: the controller inside a real `zlh serve`, with Redis for its leader lock."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def test_the_controller_process_reports_an_unreachable_redis(tmp_path: Path, redis_test_url: str) -> None:
    """`zlh controller` with Redis down: alive, not ready, and saying why; with Redis up: the leader."""
    import os
    import subprocess
    import sys

    import httpx

    from tests.e2e.conftest import ROOT, free_port

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ZLH_")}, "PYTHONPATH": str(ROOT),
           "ZLH_DATABASE_URL": f"sqlite:///{tmp_path}/zlh.sqlite3", "ZLH_DATA_DIR": str(tmp_path / "data"),
           "ZLH_CONTROLLER_INTERVAL": "0.2s", "ZLH_REDIS_KEY_PREFIX": f"zlh-test-{uuid.uuid4().hex}"}
    subprocess.run([sys.executable, "-m", "api.cli", "migrate"], cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    for redis_url, state, status in (("redis://127.0.0.1:1/0", "lock_unavailable", 503),
                                     (redis_test_url, "leader", 200)):
        port = free_port()
        with open(tmp_path / "controller.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "api.cli", "controller", "--port", str(port)],
                                    cwd=tmp_path, env={**env, "ZLH_REDIS_URL": redis_url}, stdout=log,
                                    stderr=subprocess.STDOUT)
        try:
            def ready(url: str = f"http://127.0.0.1:{port}/readyz", child: subprocess.Popen = proc) -> Any:
                try:
                    return httpx.get(url, timeout=2)
                except httpx.HTTPError:
                    assert child.poll() is None, (tmp_path / "controller.log").read_text()
                    return None

            answer = poll(ready, lambda r, want=state: r is not None and r.json()["controller"]["state"] == want)
            assert answer.status_code == status
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert f"zlh_controller_lock_available {1.0 if status == 200 else 0.0}" in metrics
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert "leader lock is unreachable" in (tmp_path / "controller.log").read_text()
