"""End to end on PostgreSQL: the billing timeline with short timers against a real `zlh serve`.

A failed payment warns, then blocks backups, then stops the real server process (never deleting
anything); paying starts it again with the same files.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from tests.billing_fixtures import SECRET, body, invoice_event, signed_headers
from tests.e2e.conftest import Server
from tests.e2e.test_provisioning import new_customer, poll

pytestmark = pytest.mark.e2e


def connectable(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_billing_timeline_against_a_real_server(serve: Callable[..., Server]) -> None:
    server = serve(ZLH_STRIPE_WEBHOOK_SECRET=SECRET, ZLH_BILLING_FINAL_WARNING_AFTER="2s",
                   ZLH_BILLING_SUSPEND_AFTER="4s")
    with new_customer(server, "late@example.com") as me, server.client() as admin:
        uid = me.get("/api/me").json()["id"]
        created = me.post("/api/instances", json={"kind": "game", "name": "world", "template": "minecraft"},
                          headers={"Idempotency-Key": "world"}).json()
        iid = created["instance_id"]
        running = poll(lambda: me.get(f"/api/instances/{iid}").json(), lambda i: i["status"] == "running")
        assert me.put(f"/api/instances/{iid}/files/content?path=/keep.txt", content=b"precious").status_code == 204
        assert admin.put(f"/api/admin/users/{uid}/stripe", json={"customer_id": "cus_e2e"}).status_code == 200

        payload = body(invoice_event("evt_e2e_1", "payment_failed", "in_1", "cus_e2e", int(time.time())))
        r = me.post("/api/billing/stripe/webhook", content=payload, headers=signed_headers(payload))
        assert r.json() == {"received": True, "duplicate": False}
        r = me.post("/api/billing/stripe/webhook", content=payload, headers=signed_headers(payload))
        assert r.json() == {"received": True, "duplicate": True}
        ladder = ["good_standing", "warned", "final_warning", "suspended"]
        seen = []
        for state in ladder[1:]:  # each step at least reached (polling may see a later one)
            billing = poll(lambda: me.get("/api/billing").json(),
                           lambda b, s=state: ladder.index(b["state"]) >= ladder.index(s), timeout=30)
            seen.append(billing["state"])
            if billing["state"] == "final_warning":
                blocked = me.post(f"/api/instances/{iid}/backups")
                assert blocked.status_code == 402 and blocked.json()["code"] == "backups_blocked"
        assert seen[-1] == "suspended"
        poll(lambda: me.get(f"/api/instances/{iid}").json(),
             lambda i: i["status"] == "suspended" and i["pending_operation_id"] is None, timeout=30)
        assert not connectable(running["address"])
        r = me.post(f"/api/instances/{iid}/power", json={"action": "start"})
        assert r.status_code == 402 and r.json()["code"] == "billing_suspended"
        titles = [a["title"] for a in me.get("/api/announcements").json()["items"]]
        assert titles == ["Servers suspended for non-payment"]

        paid = body(invoice_event("evt_e2e_2", "paid", "in_1", "cus_e2e", int(time.time())))
        assert me.post("/api/billing/stripe/webhook", content=paid, headers=signed_headers(paid)).status_code == 200
        poll(lambda: me.get("/api/billing").json()["state"], lambda s: s == "good_standing", timeout=30)
        again = poll(lambda: me.get(f"/api/instances/{iid}").json(), lambda i: i["status"] == "running", timeout=30)
        assert connectable(again["address"])
        assert me.get(f"/api/instances/{iid}/files/content?path=/keep.txt").content == b"precious"
        events = admin.get(f"/api/admin/billing/{uid}/events").json()["events"]
        steps = [e["type"].rsplit(".", 1)[-1] for e in events]
        assert [s for s in steps if s in ("Warned", "FinalWarningIssued", "Suspended", "Restored")] == [
            "Warned", "FinalWarningIssued", "Suspended", "Restored"]
