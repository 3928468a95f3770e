"""Billing over HTTP on SQLite and PostgreSQL: the webhook, duplicates, linking, the whole timeline and gates."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from domain.billing import Schedule
from services import billing
from services.bootstrap import Container
from services.workers.provisioning import ProvisioningManager
from tests.billing_fixtures import SECRET, body, invoice_event, signed_headers
from tests.integration.conftest import ADMIN_TOKEN, auth, poll

T0 = datetime.now(UTC).replace(microsecond=0)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def setup(make_container: Callable[..., Container]) -> Iterator[tuple[Container, TestClient, Clock]]:
    container = make_container(workers=("projections", "billing", "notifications"), stripe_webhook_secret=SECRET)
    clock = Clock()
    assert container.billing is not None
    container.billing.now = clock
    with TestClient(create_app(container)) as client:
        yield container, client, clock


def customer(client: TestClient, email: str) -> tuple[str, dict[str, str]]:
    r = client.post("/api/admin/users", json={"email": email}, headers=auth(ADMIN_TOKEN))
    assert r.status_code == 201, r.text
    return r.json()["id"], auth(r.json()["token"])


def post(client: TestClient, event: dict[str, Any]) -> Any:
    payload = body(event)
    return client.post("/api/billing/stripe/webhook", content=payload, headers=signed_headers(payload))


def test_webhook_fails_closed_and_checks_signatures(make_container: Callable[..., Container]) -> None:
    event = invoice_event("evt_a", "payment_failed", "in_1", "cus_x", int(T0.timestamp()))
    with TestClient(create_app(make_container(workers=("projections",)))) as client:
        r = post(client, event)
        assert r.status_code == 503 and r.json()["code"] == "webhook_not_configured"
    container = make_container(workers=("projections",), stripe_webhook_secret=SECRET)
    with TestClient(create_app(container)) as client:
        r = client.post("/api/billing/stripe/webhook", content=body(event))
        assert r.status_code == 400 and r.json()["code"] == "bad_signature"
        assert r.headers["content-type"].startswith("application/problem+json")
        assert post(client, event).json() == {"received": True, "duplicate": False}
        assert post(client, event).json() == {"received": True, "duplicate": True}


def test_concurrent_duplicates_record_one_event(make_container: Callable[..., Container]) -> None:
    container = make_container(workers=())
    app, schedule = container.app, Schedule.of(3 * 86400, 7 * 86400)
    from domain.user import User

    user = User(email="dup@example.com", admin=False)
    app.save(user)
    billing.link_customer(app, user.id, "cus_dup", schedule)
    event = invoice_event("evt_dup", "payment_failed", "in_1", "cus_dup", int(T0.timestamp()))
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        results.append(billing.record_stripe_event(app, event, body(event), schedule).duplicate)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] + [True] * 7
    account = billing.load_account(app, user.id)
    assert account is not None and account.seen == {"evt_dup"} and len(account.invoices) == 1


def test_the_whole_timeline_with_gates(setup: tuple[Container, TestClient, Clock]) -> None:
    container, client, clock = setup
    pm = ProvisioningManager(container.app, container.db, container.driver, container.edge, worker_id="t",
                             concurrency=1)
    uid, me = customer(client, "payer@example.com")
    _, other = customer(client, "other@example.com")
    instances: list[str] = []

    def drive() -> None:
        for iid in instances:
            pending = container.app.repository.get(UUID(iid)).pending_operation_id
            if pending is not None and pm.claim(pending):
                pm.execute(pending)

    def instance(iid: str) -> dict:
        return client.get(f"/api/instances/{iid}", headers=me).json()

    for name in ("alpha", "beta"):
        r = client.post("/api/instances", json={"kind": "game", "name": name, "template": "minecraft"},
                        headers={**me, "Idempotency-Key": name})
        instances.append(r.json()["instance_id"])
    drive()
    alpha, beta = instances
    client.post(f"/api/instances/{beta}/power", json={"action": "stop"}, headers=me)
    drive()
    poll(lambda: (instance(alpha)["status"], instance(beta)["status"]), lambda s: s == ("running", "stopped"))

    # An event for a customer not linked yet is kept, then applied by the link.
    assert post(client, invoice_event("evt_1", "payment_failed", "in_1", "cus_p", int(T0.timestamp()))).json()[
        "duplicate"] is False
    assert client.get("/api/billing", headers=me).json()["state"] == "good_standing"
    r = client.put(f"/api/admin/users/{uid}/stripe", json={"customer_id": "cus_p"}, headers=auth(ADMIN_TOKEN))
    assert r.status_code == 200, r.text
    state = poll(lambda: client.get("/api/billing", headers=me).json(), lambda b: b["state"] == "warned")
    assert state["next_step_at"] and state["next_step_at"].startswith((T0 + timedelta(days=3)).strftime("%Y-%m-%d"))
    notices = poll(lambda: client.get("/api/announcements", headers=me).json()["items"], lambda items: items)
    assert notices[0]["title"] == "Payment failed"
    assert client.get("/api/announcements", headers=other).json()["items"] == []
    assert client.post(f"/api/instances/{alpha}/backups", headers=me).status_code == 202
    drive()
    backup_id = client.get(f"/api/instances/{alpha}/backups", headers=me).json()["items"][0]["id"]

    clock.now = T0 + timedelta(days=3, seconds=1)
    poll(lambda: client.get("/api/billing", headers=me).json()["state"], lambda s: s == "final_warning")
    r = client.post(f"/api/instances/{alpha}/backups", headers=me)
    assert r.status_code == 402 and r.json()["code"] == "backups_blocked"
    assert client.post(f"/api/instances/{alpha}/backups/{backup_id}/restore", headers=me).status_code == 202
    drive()
    queued = client.post(f"/api/instances/{beta}/power", json={"action": "start"}, headers=me).json()

    clock.now = T0 + timedelta(days=7, seconds=1)
    poll(lambda: client.get("/api/billing", headers=me).json()["state"], lambda s: s == "suspended")
    drive()  # the start queued before the suspension fails; billing's stop of alpha runs
    op = poll(lambda: client.get(f"/api/operations/{queued['operation_id']}", headers=me).json(),
              lambda o: o["phase"] in ("succeeded", "failed"))  # the read model may show `running` first
    assert op["phase"] == "failed" and op["error"]["code"] == "billing_suspended"

    def both_suspended() -> tuple[tuple[str, str | None], ...]:
        drive()
        return tuple((instance(i)["status"], instance(i)["pending_operation_id"]) for i in (alpha, beta))

    poll(both_suspended, lambda s: s == (("suspended", None), ("suspended", None)))  # billing's stop has run
    assert UUID(alpha) not in container.driver.processes
    def kept() -> tuple[str, str, str]:  # what billing must never delete
        return repr(container.driver.files), repr(container.driver.backups), repr(container.edge.dns.list_records())

    files_before = kept()
    for method, url, kwargs in [
        ("post", "/api/instances", {"json": {"kind": "dev", "name": "c", "template": "python"},
                                    "headers": {**me, "Idempotency-Key": "c"}}),
        ("post", f"/api/instances/{alpha}/power", {"json": {"action": "start"}}),
        ("post", f"/api/instances/{alpha}/power", {"json": {"action": "restart"}}),
        ("post", f"/api/instances/{alpha}/backups/{backup_id}/restore", {}),
        ("put", f"/api/instances/{alpha}/files/content?path=/x.txt", {"content": b"x"}),
    ]:
        r = getattr(client, method)(url, **({"headers": me} | kwargs))
        assert r.status_code == 402 and r.json()["code"] == "billing_suspended", (url, r.text)
    assert client.post(f"/api/instances/{alpha}/backups", headers=me).json()["code"] == "backups_blocked"
    assert client.get(f"/api/instances/{alpha}/files?path=/", headers=me).status_code == 200
    assert client.get(f"/api/instances/{alpha}/backups", headers=me).status_code == 200
    assert client.post("/api/support/create", json={"subject": "billing", "message": "help", "instance_id": None},
                       headers=me).status_code == 201
    assert client.put("/api/notes", json={"content": "pay"}, headers={**me, "If-Match": "0"}).status_code == 200
    r = client.post(f"/api/admin/billing/{uid}/actions", json={"action": "delete_backups"},
                    headers=auth(ADMIN_TOKEN))
    assert r.status_code == 403 and r.json()["code"] == "destructive_action_rejected"

    assert post(client, invoice_event("evt_2", "paid", "in_1", "cus_p", int(clock.now.timestamp()))).status_code == 200
    poll(lambda: client.get("/api/billing", headers=me).json()["state"], lambda s: s == "good_standing")

    def restored() -> tuple[tuple[str, str | None], ...]:
        drive()
        return tuple((instance(i)["status"], instance(i)["pending_operation_id"]) for i in (alpha, beta))

    poll(restored, lambda s: s == (("running", None), ("stopped", None)))  # only what billing stopped starts again
    assert kept() == files_before
    poll(lambda: [a["title"] for a in client.get("/api/announcements", headers=me).json()["items"]],
         lambda titles: titles == ["Payment received"])  # the announcements read model follows the log
    stream = client.get(f"/api/admin/billing/{uid}/events", headers=auth(ADMIN_TOKEN)).json()["events"]
    kinds = [e["type"].split(".")[-1] for e in stream]
    transitions = [k for k in kinds if k in ("Warned", "FinalWarningIssued", "Suspended", "Restored")]
    assert transitions == ["Warned", "FinalWarningIssued", "Suspended", "Restored"]
    assert "DestructiveActionRejected" in kinds
    emails = poll(lambda: {d["kind"] for d in container.db.query("SELECT kind FROM rm_deliveries")},
                  lambda k: {"billing_warned", "billing_suspended", "billing_good_standing"} <= k)
    assert "billing_final_warning" in emails
    pm.stop(wait=True)
