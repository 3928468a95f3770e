"""Helpdesk sync with Zammad, against a faithful fake of its REST API served over HTTP (tests/fakes/zammad_api.py):
tickets, replies and internal notes mirrored both ways, idempotently, ZLH's stream staying the record."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from domain.support import SupportTicket
from services.bootstrap import Container
from services.workers.helpdesk import HelpdeskSync
from tests.fakes.serve import ServedApp, serve_app
from tests.fakes.zammad_api import FakeZammad
from tests.integration.conftest import ADMIN_TOKEN, auth, poll
from tests.integration.test_api import make_customer

ADMIN = auth(ADMIN_TOKEN)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


pytestmark = pytest.mark.real_services  # the fake Zammad API over HTTP


@pytest.fixture
def zammad() -> Iterator[tuple[FakeZammad, ServedApp]]:
    fake = FakeZammad()
    with serve_app(fake) as served:
        yield fake, served


@pytest.fixture
def container(make_container: Callable[..., Container], zammad: tuple[FakeZammad, ServedApp]) -> Container:
    fake, served = zammad
    built = make_container(workers=("projections",), support_domain="zlh.example", helpdesk="zammad",
                           helpdesk_url=served.url, helpdesk_token=fake.token, helpdesk_interval=0.05)
    built.start(("helpdesk",))
    return built


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as c:
        yield c


def open_ticket(client: TestClient, headers: dict, **extra: object) -> dict:
    r = client.post("/api/support/create", json={"subject": "Lag", "message": "my server lags", **extra},
                    headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_tickets_replies_and_notes_are_mirrored_both_ways(client: TestClient, container: Container,
                                                          zammad: tuple[FakeZammad, ServedApp]) -> None:
    fake, _ = zammad
    alice = make_customer(client, "alice@example.com")
    shot = client.post("/api/support/attachments", params={"name": "lag.png"}, content=PNG, headers=alice).json()
    ours = open_ticket(client, alice, attachments=[shot["id"]])
    number = ours["number"]
    remote = poll(lambda: fake.by_tag(number), bool)[0]
    assert remote["title"] == f"[{number}] Lag" and fake.users["alice@example.com"] == remote["customer_id"]
    first = fake.articles_of(remote["id"])[0]
    assert first["body"] == "my server lags" and first["sender"] == "Customer" and not first["internal"]
    assert first["attachments"][0]["filename"] == "lag.png"
    ticket_id = SupportTicket.create_id(number)
    poll(lambda: container.app.find(ticket_id, SupportTicket).helpdesk, lambda h: h == {"zammad": str(remote["id"])})

    client.post(f"/api/admin/support/tickets/{ours['id']}/notes", json={"note": "old plan"}, headers=ADMIN)
    client.post(f"/api/admin/support/tickets/{ours['id']}/reply", json={"message": "Restart it."}, headers=ADMIN)
    client.post(f"/api/support/tickets/{ours['id']}/reply", json={"message": "Still slow."}, headers=alice)
    articles = poll(lambda: fake.articles_of(remote["id"]), lambda a: len(a) == 4)
    assert [(a["body"], a["sender"], a["internal"]) for a in articles[1:]] == [
        ("old plan", "Agent", True), ("Restart it.", "Agent", False), ("Still slow.", "Customer", False)]

    # What agents write in Zammad comes back: a public article is a staff reply, an internal one a note.
    fake.agent_reply(remote["id"], "Moved you to a faster node.")
    fake.agent_reply(remote["id"], "Node 7 was overloaded.", internal=True)
    fake.customer_email(remote["id"], "Thanks, much better.")

    def conversation() -> list[tuple[str, str]]:
        view = client.get(f"/api/admin/support/tickets/{ours['id']}", headers=ADMIN).json()
        return [(m["kind"], m["message"]) for m in view["messages"] if m["kind"] != "event"]

    poll(conversation, lambda c: len(c) == 7)
    assert conversation()[4:] == [("message", "Moved you to a faster node."), ("note", "Node 7 was overloaded."),
                                  ("message", "Thanks, much better.")]
    mine = client.get(f"/api/support/tickets/{ours['id']}", headers=alice).json()
    assert "Node 7" not in str(mine) and mine["replies"][-2]["staff"] is True
    assert mine["messages"][-2]["via"] == "zammad"
    assert len(fake.articles_of(remote["id"])) == 7  # imported articles are never pushed back

    # Closing there closes here; reopening here reopens there.
    fake.set_state(remote["id"], "closed")
    poll(lambda: container.app.find(ticket_id, SupportTicket).status, lambda s: s == "closed")
    client.post(f"/api/admin/support/tickets/{ours['id']}/reopen", headers=ADMIN).raise_for_status()
    poll(lambda: fake.tickets[remote["id"]]["state_id"], lambda s: s == 2)

    # Replaying the whole log from 0 creates nothing new in Zammad.
    container.stop_worker("helpdesk")
    with container.db.transaction() as cur:
        cur.execute("UPDATE zlh_positions SET position = 0 WHERE name = 'helpdesk'")
    replay = HelpdeskSync(container.app, container.db, container.helpdesk.client, container.blobs, "zlh.example")
    while replay.follower.process_page():
        pass
    replay.poll()
    assert len(fake.tickets) == 1 and len(fake.articles_of(remote["id"])) == 7
    assert len(conversation()) == 7


def test_a_crash_between_create_and_record_links_instead_of_creating_again(
        client: TestClient, container: Container, zammad: tuple[FakeZammad, ServedApp]) -> None:
    fake, _ = zammad
    container.stop_worker("helpdesk")
    alice = make_customer(client, "alice@example.com")
    ours = open_ticket(client, alice)
    number = ours["number"]
    ticket = container.app.find(SupportTicket.create_id(number), SupportTicket)
    sync = HelpdeskSync(container.app, container.db, container.helpdesk.client, container.blobs, "zlh.example")
    # The first attempt created the Zammad ticket, then the process died before recording its id.
    sync.client.create_ticket(number, ticket.subject, ticket.email, ticket.message, sync.message_id(ticket.id, 1), [])
    fake.fail_next(2, 503)  # and Zammad is briefly down when the sync comes back: it waits, it never gives up
    with pytest.raises(ConnectionError):
        sync.follower.process_page()
    with pytest.raises(ConnectionError):
        sync.follower.process_page()
    while sync.follower.process_page():
        pass
    assert len(fake.tickets) == 1
    linked = container.app.find(ticket.id, SupportTicket)
    assert linked.helpdesk == {"zammad": "1"} and linked.helpdesk_messages == {"zammad": {1: "1"}}
    assert not container.db.query("SELECT * FROM zlh_dead_letters WHERE follower = 'helpdesk'")


def test_a_wrong_token_is_refused_and_nothing_is_recorded(make_container: Callable[..., Container],
                                                          zammad: tuple[FakeZammad, ServedApp]) -> None:
    _, served = zammad
    built = make_container(workers=("projections",), helpdesk="zammad", helpdesk_url=served.url,
                           helpdesk_token="wrong")
    from services.workers.helpdesk import build_helpdesk_sync

    sync = build_helpdesk_sync(built.app, built.db, built.settings)
    from services.adapters.zammad import HelpdeskError

    try:
        with pytest.raises(HelpdeskError, match="401"):
            sync.client.find_ticket("ZLH-20260101-0001")
    finally:
        sync.client.close()
