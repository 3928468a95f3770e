"""Followers never stop on one event: poison events become dead letters, are listed, and apply again once fixed.

On SQLite and PostgreSQL, with real read models and the notifications process manager.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.metrics import refresh_gauges
from projections.tickets import TicketsProjection
from services.adapters.fake_notify import FakeAlertChannel, FakeEmailChannel
from services.bootstrap import Container
from services.infrastructure import dead_letters, log_following
from services.infrastructure.log_following import MAX_ATTEMPTS
from services.workers import notifications
from tests.integration.conftest import ADMIN_TOKEN, auth, poll
from tests.integration.test_api import make_customer

ADMIN = auth(ADMIN_TOKEN)


class Poison:
    """Makes a function raise for events whose subject (or ticket subject) is `poison`, until cured."""

    def __init__(self, error: Callable[[], Exception]) -> None:
        self.error, self.cured, self.calls = error, False, 0

    def wrap(self, func: Callable[..., Any], event_index: int) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            event = args[event_index]
            if not self.cured and getattr(event, "subject", None) == "poison":
                self.calls += 1
                raise self.error()
            return func(*args, **kwargs)
        return wrapped


@pytest.fixture
def channels() -> tuple[FakeEmailChannel, FakeAlertChannel]:
    return FakeEmailChannel(), FakeAlertChannel()


@pytest.fixture
def container(make_container: Callable[..., Container], channels: tuple) -> Container:
    built = make_container(workers=())
    built.channels = channels
    return built


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as c:
        yield c


def open_ticket(client: TestClient, headers: dict[str, str], subject: str) -> dict[str, Any]:
    r = client.post("/api/support/create", json={"subject": subject, "message": "m"}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_a_read_model_skips_a_poison_event_and_applies_it_after_a_fix(
        client: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    poison = Poison(lambda: ValueError("cannot store this subject"))
    monkeypatch.setattr(TicketsProjection, "apply", poison.wrap(TicketsProjection.apply, 2))
    container.start(("projections",))
    alice = make_customer(client, "alice@example.com")
    first = open_ticket(client, alice, "before")
    bad = open_ticket(client, alice, "poison")
    r = client.post("/api/support/create", json={"subject": "after", "message": "m"}, headers=alice)
    # The tickets read model went on past the poison event: the ticket after it is listed at once.
    assert r.status_code == 201 and r.headers["zlh-read-your-writes"] == "caught-up"
    listed = [t["number"] for t in client.get("/api/support/tickets", headers=alice).json()["items"]]
    assert sorted(listed) == sorted([first["number"], r.json()["number"]])
    assert poison.calls >= MAX_ATTEMPTS

    status = {p["name"]: p for p in client.get("/api/admin/projections", headers=ADMIN).json()["items"]}
    assert status["tickets"]["lag"] == 0
    [letter] = status["tickets"]["dead_letters"]
    assert letter["originator_id"] == bad["id"] and letter["originator_version"] == 1
    assert letter["topic"] == "zlh.SupportTicket.Opened" and letter["attempts"] == MAX_ATTEMPTS
    assert "ValueError: cannot store this subject" in letter["error"]
    assert letter["first_attempt_at"] <= letter["last_attempt_at"]
    assert all(not p["dead_letters"] for name, p in status.items() if name != "tickets")
    refresh_gauges(container)
    metrics = client.get("/metrics").text
    assert 'zlh_dead_letters{consumer="tickets"} 1.0' in metrics

    # Fixed (the code now copes): a retry rebuilds the read model, dead letter included.
    poison.cured = True
    assert container.retry_dead_letters("tickets") == "rebuilt"
    listed = [t["number"] for t in client.get("/api/support/tickets", headers=alice).json()["items"]]
    assert bad["number"] in listed and len(listed) == 3
    assert dead_letters.unresolved(container.db) == []
    refresh_gauges(container)
    assert 'zlh_dead_letters{consumer="tickets"} 0.0' in client.get("/metrics").text


def test_a_rebuild_records_what_still_fails_and_the_retry_route_answers(
        client: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    poison = Poison(lambda: KeyError("still broken"))
    monkeypatch.setattr(TicketsProjection, "apply", poison.wrap(TicketsProjection.apply, 2))
    container.start(("projections",))
    alice = make_customer(client, "alice@example.com")
    bad = open_ticket(client, alice, "poison")
    poll(lambda: dead_letters.unresolved(container.db, "tickets"), bool)
    r = client.post("/api/admin/projections/tickets/retry", headers=ADMIN)
    assert r.status_code == 202 and r.json()["status"] == "rebuilding"
    poll(lambda: container.runners["tickets"].progress.state, lambda s: s == "done")
    [letter] = dead_letters.unresolved(container.db, "tickets")  # the rebuilt model's own, not a duplicate
    assert letter["originator_id"] == bad["id"] and "KeyError" in letter["error"]
    assert client.post("/api/admin/projections/nope/retry", headers=ADMIN).status_code == 404


@pytest.mark.parametrize("outage", ["sqlite", "postgres", "connection"])
def test_an_infrastructure_error_pauses_a_follower_and_never_makes_a_dead_letter(
        client: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch, outage: str) -> None:
    monkeypatch.setattr(log_following, "BACKOFF", (0.01, 0.05))  # many retries quickly; the count is what matters
    errors = {"sqlite": lambda: sqlite3.OperationalError("database is locked"),
              "postgres": lambda: psycopg.OperationalError("server closed the connection"),
              "connection": lambda: ConnectionRefusedError("refused")}
    poison = Poison(errors[outage])
    monkeypatch.setattr(TicketsProjection, "apply", poison.wrap(TicketsProjection.apply, 2))
    container.start(("projections",))
    alice = make_customer(client, "alice@example.com")
    open_ticket(client, alice, "poison")
    poll(lambda: poison.calls, lambda n: n > 3 * MAX_ATTEMPTS, timeout=30)  # tried well past the attempt budget
    assert dead_letters.unresolved(container.db) == []
    poison.cured = True  # the database is back
    poll(lambda: client.get("/api/support/tickets", headers=alice).json()["items"], lambda items: len(items) == 1)
    assert dead_letters.unresolved(container.db) == []


def test_a_process_manager_skips_a_poison_event_and_a_retry_never_repeats_an_effect(
        client: TestClient, container: Container, channels: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    email, alerts = channels
    poison = Poison(lambda: RuntimeError("cannot plan this one"))
    monkeypatch.setattr(notifications, "plan", poison.wrap(notifications.plan, 0))
    container.start(("projections", "notifications"))
    alice = make_customer(client, "alice@example.com")
    bad = open_ticket(client, alice, "poison")
    good = open_ticket(client, alice, "fine")
    # The ticket after the poison event is mailed; the poison event is a dead letter of `notifications`.
    poll(lambda: [m.subject for m, _ in email.sent], lambda s: any(good["number"] in x for x in s))
    [letter] = poll(lambda: dead_letters.unresolved(container.db, "notifications"), bool)
    assert letter["originator_id"] == bad["id"] and letter["attempts"] == MAX_ATTEMPTS
    queues = {q["name"]: q for q in client.get("/api/admin/queues", headers=ADMIN).json()["items"]}
    assert [d["originator_id"] for d in queues["notifications"]["dead_letters"]] == [bad["id"]]
    assert not any(bad["number"] in m.subject for m, _ in email.sent)

    poison.cured = True
    r = client.post("/api/admin/projections/notifications/retry", headers=ADMIN)
    assert r.status_code == 202 and r.json()["status"] == "requested"
    container.app.signal.notify()
    poll(lambda: dead_letters.unresolved(container.db, "notifications"), lambda d: d == [])
    poll(lambda: [m.subject for m, _ in email.sent], lambda s: any(bad["number"] in x for x in s))
    # Asking again, and replaying the whole log, sends nothing more: effects are keyed by their event.
    assert container.retry_dead_letters("notifications") == "requested"
    manager = container.notifications
    assert manager is not None
    manager.follower.retry_dead_letters()
    with container.db.transaction() as cur:
        cur.execute("UPDATE zlh_positions SET position = 0 WHERE name = 'notifications'")
    while manager.dispatch_page():
        pass
    assert sum(bad["number"] in m.subject for m, _ in email.sent) == 1
    assert sum(good["number"] in m.subject for m, _ in email.sent) == 1
    assert sum(bad["number"] in a.title for a, _ in alerts.sent) == 1
