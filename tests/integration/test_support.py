"""Support tickets, notifications, announcements and notes, on SQLite and PostgreSQL, with fake channels."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from domain.delivery import delivery_id
from services.adapters.fake_notify import FakeAlertChannel, FakeEmailChannel
from services.bootstrap import Container
from services.notification_ports import Outcome
from services.support import open_ticket
from services.users import Principal, create_user
from services.workers.notifications import NotificationsManager
from tests.integration.conftest import poll
from tests.integration.test_api import assert_problem, make_customer
from tests.integration.test_lifecycle import running_instance


@pytest.fixture
def channels() -> tuple[FakeEmailChannel, FakeAlertChannel]:
    return FakeEmailChannel(), FakeAlertChannel()


@pytest.fixture
def container(make_container: Callable[..., Container], channels: tuple) -> Container:
    built = make_container(workers=("projections", "provisioning"))
    built.channels = channels
    built.start(("notifications",))
    return built


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as c:
        yield c


def test_ticket_numbers_listing_and_validation(client: TestClient) -> None:
    alice = make_customer(client, "alice@example.com")
    bob = make_customer(client, "bob@example.com")
    r = client.post("/api/support/create", json={"subject": "Lag", "message": "My server lags"}, headers=alice)
    assert r.status_code == 201, r.text
    body = r.json()
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert re.fullmatch(rf"ZLH-{today}-\d{{4}}", body["number"]) and body["status"] == "open"
    mine = client.get("/api/support/tickets", headers=alice).json()["items"]
    assert [t["number"] for t in mine] == [body["number"]]
    assert client.get("/api/support/tickets", headers=bob).json() == {"items": [], "next_cursor": None}
    assert_problem(client.get(f"/api/support/tickets/{body['id']}", headers=bob), 404, "not_found")
    for bad in ({"subject": "", "message": "x"}, {"subject": "x"}, {"subject": "x", "message": "y", "z": 1}):
        assert_problem(client.post("/api/support/create", json=bad, headers=alice), 422, "validation_error")
    assert len(client.get("/api/support/tickets", headers=alice).json()["items"]) == 1


def test_ticket_about_an_instance(client: TestClient) -> None:
    alice = make_customer(client, "alice@example.com")
    bob = make_customer(client, "bob@example.com")
    iid = running_instance(client, alice)
    about = {"subject": "Crash", "message": "It crashed", "instance_id": iid}
    assert client.post("/api/support/create", json=about, headers=alice).status_code == 201
    assert_problem(client.post("/api/support/create", json=about, headers=bob), 404, "not_found")


def test_ticket_mails_the_customer_and_alerts_staff_once(client: TestClient, channels: tuple,
                                                        container: Container) -> None:
    email, alerts = channels
    alice = make_customer(client, "alice@example.com")
    number = client.post("/api/support/create", json={"subject": "Lag", "message": "help"},
                         headers=alice).json()["number"]
    poll(lambda: (len(email.sent), len(alerts.sent)), lambda n: n == (1, 1))
    mail, _ = email.sent[0]
    assert mail.to == "alice@example.com" and number in mail.subject and "help" in mail.body
    alert, _ = alerts.sent[0]
    assert number in alert.title and ("Customer", "alice@example.com") in alert.fields
    # Replaying the whole log (position back to 0) sends nothing again.
    container.stop_worker("notifications")
    with container.db.transaction() as cur:
        cur.execute("UPDATE zlh_positions SET position = 0 WHERE name = 'notifications'")
    replay = NotificationsManager(container.app, container.db, email, alerts)
    while replay.dispatch_page():
        pass
    assert (len(email.sent), len(alerts.sent)) == (1, 1)
    # A staff reply mails the customer.
    ticket_id = client.get("/api/support/tickets", headers=alice).json()["items"][0]["id"]
    admin = {"Authorization": "Bearer test-admin-token"}
    assert client.post(f"/api/admin/support/tickets/{ticket_id}/reply", json={"message": "fixed"},
                       headers=admin).status_code == 200
    while replay.dispatch_page():
        pass
    assert len(email.sent) == 2 and "fixed" in email.sent[1][0].body and number in email.sent[1][0].subject
    closed = client.post(f"/api/admin/support/tickets/{ticket_id}/close", headers=admin).json()
    assert closed["status"] == "closed" and [r["message"] for r in closed["replies"]] == ["fixed"]
    listed = client.get("/api/admin/support/tickets", params={"status": "closed"}, headers=admin).json()["items"]
    assert [t["number"] for t in listed] == [number]


def test_forty_concurrent_tickets_get_forty_numbers(container: Container) -> None:
    user = create_user(container.app, "many@example.com", False).principal
    with ThreadPoolExecutor(max_workers=40) as pool:
        tickets = list(pool.map(lambda n: open_ticket(container.app, user, f"s{n}", "m", None)[0], range(40)))
    numbers = [t.number for t in tickets]
    assert len(set(numbers)) == 40
    assert sorted(int(n[-4:]) for n in numbers) == list(range(1, 41))


def test_transient_failures_are_retried_then_sent_exactly_once(container: Container) -> None:
    email, alerts = FakeEmailChannel(), FakeAlertChannel()
    email.script = [Outcome("transient", "connection refused"), Outcome("transient", "421 try later")]
    clock = [datetime(2026, 11, 24, 12, 0, tzinfo=UTC)]
    manager = NotificationsManager(container.app, container.db, email, alerts, now=lambda: clock[0])
    container.stop_worker("notifications")
    user = Principal(create_user(container.app, "r@example.com", False).principal.id, "r@example.com", False)
    ticket, _ = open_ticket(container.app, user, "s", "m", None)
    mail_id = delivery_id(ticket.id, 1, "email")
    manager.request(ticket.id, 1, "email", "ticket_acknowledgement", {"to": "r@example.com", "subject": "s",
                                                                         "body": "b"})
    assert manager.deliver(mail_id) == "retrying"
    assert manager.deliver(mail_id) == "retrying"  # not due yet: no attempt
    assert email.attempts == 1
    clock[0] += timedelta(minutes=10)
    assert manager.deliver(mail_id) == "retrying"
    clock[0] += timedelta(minutes=10)
    assert manager.deliver(mail_id) == "sent"
    assert manager.deliver(mail_id) == "sent"
    assert len(email.sent) == 1 and email.attempts == 3


def test_permanent_failure_is_recorded_and_alerted(container: Container) -> None:
    email, alerts = FakeEmailChannel(), FakeAlertChannel()
    email.script = [Outcome("permanent", "550 no such mailbox")]
    manager = NotificationsManager(container.app, container.db, email, alerts)
    source = UUID(int=7)
    did = manager.request(source, 1, "email", "ticket_acknowledgement", {"to": "x@example.com", "subject": "s",
                                                                          "body": "b"})
    assert manager.deliver(did) == "failed"
    assert len(alerts.sent) == 1 and "550" in alerts.sent[0][0].description
    assert manager.deliver(did) == "failed" and email.attempts == 1


def test_not_configured_is_recorded_with_the_reason(container: Container) -> None:
    from services.adapters.discord import DiscordAlertChannel
    from services.adapters.smtp import SmtpEmailChannel

    manager = NotificationsManager(container.app, container.db, SmtpEmailChannel(None), DiscordAlertChannel(None))
    did = manager.request(UUID(int=8), 1, "email", "ticket_acknowledgement", {"to": "x@example.com",
                                                                               "subject": "s", "body": "b"})
    assert manager.deliver(did) == "not_sent"
    events = [type(e).__name__ for e in container.app.stream(did)]
    assert events == ["Requested", "Attempting", "NotSent"]


def test_notes_versions_conflicts_and_limits(client: TestClient) -> None:
    alice = make_customer(client, "alice@example.com")
    assert client.get("/api/notes", headers=alice).json() == {"content": "", "version": 0}
    saved = client.put("/api/notes", json={"content": "first"}, headers={**alice, "If-Match": "0"})
    assert saved.status_code == 200 and saved.json() == {"content": "first", "version": 1}
    assert_problem(client.put("/api/notes", json={"content": "stale"}, headers={**alice, "If-Match": "0"}),
                   412, "version_conflict")
    assert_problem(client.put("/api/notes", json={"content": "x"}, headers=alice), 428, "precondition_required")
    assert_problem(client.put("/api/notes", json={"content": "x" * (64 * 1024 + 1)},
                              headers={**alice, "If-Match": "1"}), 413, "too_large")
    assert client.get("/api/notes", headers=alice).json() == {"content": "first", "version": 1}
    bob = make_customer(client, "bob@example.com")
    assert client.get("/api/notes", headers=bob).json() == {"content": "", "version": 0}

    def save(text: str) -> int:
        return client.put("/api/notes", json={"content": text}, headers={**alice, "If-Match": "1"}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(save, [f"tab {n}" for n in range(8)]))
    assert sorted(codes) == [200] + [412] * 7
    for n in range(2, 25):  # past a snapshot interval, still exact
        assert client.put("/api/notes", json={"content": f"v{n}"}, headers={**alice, "If-Match": str(n)}).json() == \
            {"content": f"v{n}", "version": n + 1}


def test_announcements_target_and_windows(client: TestClient) -> None:
    admin = {"Authorization": "Bearer test-admin-token"}
    alice, bob = make_customer(client, "alice@example.com"), make_customer(client, "bob@example.com")
    alice_id = client.get("/api/me", headers=alice).json()["id"]
    now = datetime.now(UTC)

    def publish(**body: object) -> dict:
        r = client.post("/api/admin/announcements", json={"level": "info", "title": "t", "body": "b", **body},
                        headers=admin)
        assert r.status_code == 201, r.text
        return r.json()

    everyone = publish(title="everyone")
    just_alice = publish(title="alice only", user_id=alice_id, level="warning")
    publish(title="future", starts_at=(now + timedelta(days=1)).isoformat())
    publish(title="over", starts_at=(now - timedelta(days=2)).isoformat(),
            ends_at=(now - timedelta(days=1)).isoformat())
    window = publish(title="maintenance now", level="critical", starts_at=(now - timedelta(hours=1)).isoformat(),
                     ends_at=(now + timedelta(hours=1)).isoformat())

    def titles(headers: dict) -> set[str]:
        return {a["title"] for a in client.get("/api/announcements", headers=headers).json()["items"]}

    assert titles(alice) == {"everyone", "alice only", "maintenance now"}
    assert titles(bob) == {"everyone", "maintenance now"}
    assert set(everyone) >= {"id", "level", "title", "body", "created_at"} and just_alice["level"] == "warning"
    assert client.delete(f"/api/admin/announcements/{window['id']}", headers=admin).status_code == 204
    assert titles(bob) == {"everyone"}
    assert_problem(client.post("/api/admin/announcements", json={"level": "info", "title": "t", "body": "b"},
                               headers=bob), 403, "forbidden")
    assert_problem(client.post("/api/admin/announcements", json={
        "level": "info", "title": "t", "body": "b", "starts_at": now.isoformat(),
        "ends_at": (now - timedelta(hours=1)).isoformat()}, headers=admin), 422, "invalid_window")
    assert_problem(client.post("/api/admin/announcements", json={"level": "loud", "title": "t", "body": "b"},
                               headers=admin), 422, "validation_error")
