"""Kernel limits end to end: a real `zlh serve` (its embedded agent) runs a template whose server goes over its
memory limit; the kernel kills it in its cgroup, and the customer sees why on the operation and the instance.

Needs a machine whose cgroups the agent may write (root; CI is): elsewhere this fails and says why, it never
skips.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.contract.test_limits import HOG
from tests.e2e.conftest import ADMIN_TOKEN, Server
from tests.e2e.test_provisioning import new_customer, poll


def test_a_server_over_its_memory_limit_fails_with_out_of_memory_and_the_instance_shows_why(
        serve: Callable[..., Server], tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "hog.toml").write_text(HOG)
    server = serve(ZLH_TEMPLATES_DIR=str(templates))
    with server.client(ADMIN_TOKEN) as admin:
        ready = admin.get("/readyz").json()
    assert ready["limits"].startswith("enforced: cgroup v"), (
        f"kernel limits cannot be tested on this machine: {ready.get('limits')} (run as root on a machine whose "
        "cgroups the agent may write)")
    with new_customer(server, "hog@example.com") as customer:
        accepted = customer.post("/api/instances", headers={"Idempotency-Key": "hog-1"},
                                 json={"kind": "dev", "name": "hog", "template": "hog",
                                       "variables": {"eat_at_start": True}})
        assert accepted.status_code == 202, accepted.text
        operation = poll(lambda: customer.get(accepted.json()["status_url"]).json(),
                         lambda op: op["phase"] in ("succeeded", "failed"))
        assert operation["phase"] == "failed"
        assert operation["error"]["code"] == "out_of_memory", operation["error"]
        assert "memory limit of 64 MiB" in operation["error"]["message"]
        iid = accepted.json()["instance_id"]
        instance = poll(lambda: customer.get(f"/api/instances/{iid}").json(),
                        lambda i: i["pending_operation_id"] is None and i["last_exit"] is not None)
        assert instance["last_exit"]["reason"] == "out_of_memory"
        stats = customer.get(f"/api/instances/{iid}/stats").json()
        assert stats["limits_enforced"] is True and stats["limits"]["memory_mb"] == 64
        assert stats["last_exit"]["reason"] == "out_of_memory" and stats["current"] is None
