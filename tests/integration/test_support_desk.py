"""The staff ticket desk, attachments, triage and the soak report over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from services.adapters.fake_driver import FakeDriver
from services.adapters.fake_notify import FakeAlertChannel, FakeEmailChannel
from services.bootstrap import Container
from services.infrastructure.leader import InProcessLock
from services.ports import ownership_comment
from services.workers.controller import Controller
from tests.integration.conftest import ADMIN_TOKEN, auth, poll
from tests.integration.test_api import assert_problem, make_customer
from tests.integration.test_lifecycle import running_instance

ADMIN = auth(ADMIN_TOKEN)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 600


@pytest.fixture
def channels() -> tuple[FakeEmailChannel, FakeAlertChannel]:
    return FakeEmailChannel(), FakeAlertChannel()


@pytest.fixture
def container(make_container: Callable[..., Container], channels: tuple) -> Container:
    built = make_container(workers=("projections", "provisioning"), support_domain="zlh.example")
    built.channels = channels
    built.start(("notifications",))
    return built


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as c:
        yield c


def open_ticket(client: TestClient, headers: dict, subject: str = "Lag", message: str = "help",
                **extra: object) -> dict:
    r = client.post("/api/support/create", json={"subject": subject, "message": message, **extra}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def upload(client: TestClient, headers: dict, name: str, data: bytes) -> dict:
    r = client.post("/api/support/attachments", params={"name": name}, content=data,
                    headers={**headers, "Content-Type": "image/png"})
    assert r.status_code == 201, r.text
    return r.json()


def test_desk_lists_searches_and_pages_on_the_server(client: TestClient) -> None:
    alice = make_customer(client, "alice@example.com")
    bob = make_customer(client, "bob.builder@example.com")
    numbers = [open_ticket(client, alice, subject=f"Alice problem {n}")["number"] for n in range(3)]
    bobs = open_ticket(client, bob, subject="Server will not start")
    first = client.get("/api/admin/support/tickets", params={"limit": 2}, headers=ADMIN).json()
    assert len(first["items"]) == 2 and first["next_cursor"] and first["counts"]["open"] == 4
    second = client.get("/api/admin/support/tickets", params={"limit": 2, "cursor": first["next_cursor"]},
                        headers=ADMIN).json()
    assert second["next_cursor"] is None
    assert {t["number"] for t in first["items"] + second["items"]} == {*numbers, bobs["number"]}

    def search(**params: str) -> list[str]:
        r = client.get("/api/admin/support/tickets", params=params, headers=ADMIN)
        assert r.status_code == 200, r.text
        return [t["number"] for t in r.json()["items"]]

    assert search(q="BOB.BUILDER") == [bobs["number"]]
    assert search(q="will not") == [bobs["number"]]
    assert search(q=numbers[1]) == [numbers[1]]
    assert search(q=numbers[1][-4:]) == [numbers[1]]
    assert search(q="%") == [] and search(q="_") == []  # wildcards are text, not patterns
    assert search(status="closed") == [] and len(search(status="open")) == 4
    assert_problem(client.get("/api/admin/support/tickets", params={"status": "pending"}, headers=ADMIN),
                   422, "validation_error")
    assert_problem(client.get("/api/admin/support/tickets", params={"cursor": "nope"}, headers=ADMIN),
                   400, "bad_cursor")
    assert_problem(client.get("/api/admin/support/tickets", headers=alice), 403, "forbidden")
    page = client.get("/api/support/tickets", params={"limit": 2}, headers=alice).json()
    rest = client.get("/api/support/tickets", params={"cursor": page["next_cursor"]}, headers=alice).json()
    assert sorted(t["number"] for t in page["items"] + rest["items"]) == sorted(numbers)


def test_conversation_statuses_notes_assignment_close_and_reopen(client: TestClient, channels: tuple) -> None:
    email, _ = channels
    alice = make_customer(client, "alice@example.com")
    ticket = open_ticket(client, alice, message="my server lags")
    tid, number = ticket["id"], ticket["number"]
    poll(lambda: len(email.sent), lambda n: n == 1)
    assert email.sent[0][0].reply_to == f"support+{number}@zlh.example"

    staff = client.post("/api/admin/users", json={"email": "agent@zlh.example", "admin": True}, headers=ADMIN).json()
    r = client.post(f"/api/admin/support/tickets/{tid}/assign", json={"assignee_id": staff["id"]}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["assignee"] == {"id": staff["id"], "email": "agent@zlh.example"}
    customer_id = client.get("/api/me", headers=alice).json()["id"]
    assert_problem(client.post(f"/api/admin/support/tickets/{tid}/assign", json={"assignee_id": customer_id},
                               headers=ADMIN), 422, "not_staff")
    assert [t["number"] for t in client.get("/api/admin/support/tickets", params={"assignee": staff["id"]},
                                            headers=ADMIN).json()["items"]] == [number]

    note = client.post(f"/api/admin/support/tickets/{tid}/notes", json={"note": "SECRET: old plan, be nice"},
                       headers=ADMIN)
    assert note.status_code == 200 and note.json()["status"] == "open"
    reply = client.post(f"/api/admin/support/tickets/{tid}/reply", json={"message": "Please restart it."},
                        headers=auth(staff["token"]))
    assert reply.status_code == 200 and reply.json()["status"] == "waiting_on_customer"
    listed = client.get("/api/admin/support/tickets", params={"status": "waiting_on_customer"}, headers=ADMIN).json()
    assert [t["number"] for t in listed["items"]] == [number] and listed["items"][0]["last_from"] == "staff"
    poll(lambda: len(email.sent), lambda n: n == 2)
    assert email.sent[1][0].reply_to == f"support+{number}@zlh.example" and "restart" in email.sent[1][0].body

    again = client.post(f"/api/support/tickets/{tid}/reply", json={"message": "Still slow."}, headers=alice)
    assert again.status_code == 200 and again.json()["status"] == "open"

    # The customer never sees a note, an assignment or a staff member's address.
    mine = client.get(f"/api/support/tickets/{tid}", headers=alice).json()
    assert "SECRET" not in str(mine) and "agent@zlh.example" not in str(mine)
    assert [m["message"] for m in mine["messages"]] == ["my server lags", "Please restart it.", "Still slow."]
    assert [r["staff"] for r in mine["replies"]] == [True, False]
    assert all(m["kind"] == "message" for m in mine["messages"])
    assert "SECRET" not in str(client.get("/api/support/tickets", headers=alice).json())
    assert all("SECRET" not in mail.body for mail, _ in email.sent)

    # Staff see everything, each with its actor and time.
    desk = client.get(f"/api/admin/support/tickets/{tid}", headers=ADMIN).json()
    kinds = [(m["kind"], m.get("event")) for m in desk["messages"]]
    assert kinds == [("message", None), ("event", "assigned"), ("note", None), ("message", None), ("message", None)]
    note_item = desk["messages"][2]
    admin_me = client.get("/api/me", headers=ADMIN).json()
    assert note_item["message"].startswith("SECRET")
    assert note_item["author"] == {"id": admin_me["id"], "email": admin_me["email"], "staff": True}
    assert desk["messages"][3]["author"] == {"id": staff["id"], "email": "agent@zlh.example", "staff": True}
    assert desk["messages"][4]["author"]["email"] == "alice@example.com"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", m["at"]) for m in desk["messages"])

    closed = client.post(f"/api/admin/support/tickets/{tid}/close", headers=ADMIN)
    assert closed.json()["status"] == "closed"
    assert_problem(client.post(f"/api/admin/support/tickets/{tid}/close", headers=ADMIN), 409, "illegal_transition")
    assert_problem(client.post(f"/api/admin/support/tickets/{tid}/reply", json={"message": "x"}, headers=ADMIN),
                   409, "illegal_transition")
    reopened = client.post(f"/api/admin/support/tickets/{tid}/reopen", headers=ADMIN).json()
    assert reopened["status"] == "open" and reopened["messages"][-1]["event"] == "reopened"
    assert_problem(client.post(f"/api/admin/support/tickets/{tid}/reopen", headers=ADMIN), 409, "illegal_transition")
    assert_problem(client.post(f"/api/admin/support/tickets/{uuid4()}/notes", json={"note": "x"}, headers=ADMIN),
                   404, "not_found")
    assert_problem(client.post(f"/api/admin/support/tickets/{tid}/notes", json={"note": "a\x00b"}, headers=ADMIN),
                   422, "validation_error")


def test_attachments_upload_download_limits_and_privacy(client: TestClient, container: Container) -> None:
    alice = make_customer(client, "alice@example.com")
    bob = make_customer(client, "bob@example.com")
    shot = upload(client, alice, "../screen shot.png", PNG)
    assert shot["name"] == "screen shot.png" and shot["content_type"] == "image/png" and shot["size"] == len(PNG)
    assert (container.blobs.root / shot["sha256"][:2] / shot["sha256"]).read_bytes() == PNG
    log = upload(client, alice, "latest.log", b"[12:00:01] [Server thread/INFO]: Done (3.2s)!\n")
    assert log["content_type"] == "text/plain"
    ticket = open_ticket(client, alice, attachments=[shot["id"]])
    tid = ticket["id"]

    got = client.get(f"/api/support/tickets/{tid}/attachments/{shot['sha256']}", headers=alice)
    assert got.status_code == 200 and got.content == PNG
    assert got.headers["content-type"] == "image/png" and got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-disposition"].startswith("attachment;")
    assert "screen%20shot.png" in got.headers["content-disposition"]
    # Another customer: 404, whether they know the ticket or the hash, or attach someone else's upload.
    assert_problem(client.get(f"/api/support/tickets/{tid}/attachments/{shot['sha256']}", headers=bob),
                   404, "not_found")
    bobs = open_ticket(client, bob)
    assert_problem(client.get(f"/api/support/tickets/{bobs['id']}/attachments/{shot['sha256']}", headers=bob),
                   404, "not_found")
    assert_problem(client.post(f"/api/support/tickets/{bobs['id']}/reply",
                               json={"message": "mine now", "attachments": [shot["id"]]}, headers=bob),
                   404, "not_found")
    # Staff may download it; a note's attachment is staff only.
    assert client.get(f"/api/support/tickets/{tid}/attachments/{shot['sha256']}", headers=ADMIN).content == PNG
    staff_log = upload(client, ADMIN, "debug.txt", b"internal: node 3 is flaky\n")
    client.post(f"/api/admin/support/tickets/{tid}/notes", json={"note": "see log", "attachments": [staff_log["id"]]},
                headers=ADMIN).raise_for_status()
    assert_problem(client.get(f"/api/support/tickets/{tid}/attachments/{staff_log['sha256']}", headers=alice),
                   404, "not_found")
    assert client.get(f"/api/support/tickets/{tid}/attachments/{staff_log['sha256']}", headers=ADMIN).status_code \
        == 200
    # A reply with an attachment, then the customer's view lists it.
    client.post(f"/api/support/tickets/{tid}/reply", json={"message": "log attached", "attachments": [log["id"]]},
                headers=alice).raise_for_status()
    view = client.get(f"/api/support/tickets/{tid}", headers=alice).json()
    assert view["attachments"][0]["sha256"] == shot["sha256"]
    assert view["replies"][-1]["attachments"][0]["name"] == "latest.log"

    # Oversized: 413 too_large before the body is read whole; nothing recorded.
    big = client.post("/api/support/attachments", params={"name": "big.bin"}, content=b"\x00" * (10 * 1024 * 1024 + 1),
                      headers=alice)
    assert_problem(big, 413, "too_large")
    exactly = client.post("/api/support/attachments", params={"name": "max.bin"}, content=b"\x00" * (10 * 1024 * 1024),
                          headers=alice)
    assert exactly.status_code == 201 and exactly.json()["content_type"] == "application/octet-stream"
    # Elsewhere the 1 MiB limit stands.
    assert_problem(client.post("/api/support/create", content=b"{" + b" " * (1024 * 1024 + 1) + b"}",
                               headers={**alice, "Content-Type": "application/json"}), 413, "too_large")
    # Disguised: an executable named .png is refused, nothing stored.
    files_before = sorted(p.name for p in container.blobs.root.rglob("*") if p.is_file())
    disguised = client.post("/api/support/attachments", params={"name": "cute-cat.png"}, content=ELF,
                            headers={**alice, "Content-Type": "image/png"})
    assert_problem(disguised, 422, "attachment_disguised")
    assert "executable" in disguised.json()["detail"]
    assert sorted(p.name for p in container.blobs.root.rglob("*") if p.is_file()) == files_before
    assert_problem(client.post("/api/support/attachments", params={"name": "empty.txt"}, content=b"",
                               headers=alice), 422, "attachment_refused")
    assert_problem(client.post("/api/support/create", json={"subject": "s", "message": "m",
                                                            "attachments": [str(uuid4())] * 11}, headers=alice),
                   422, "validation_error")
    assert_problem(client.get(f"/api/support/tickets/{tid}/attachments/not-a-hash", headers=alice),
                   404, "not_found")


def test_triage_shows_the_customers_server_without_acting(client: TestClient, container: Container,
                                                          driver: FakeDriver) -> None:
    alice = make_customer(client, "alice@example.com")
    iid = running_instance(client, alice)
    driver.console_output.setdefault(UUID(iid), []).extend(
        ["[Server thread/INFO]: Done", "[Server thread/WARN]: Can't keep up!"])
    ticket = open_ticket(client, alice, subject="Lag", message="restart my server please", instance_id=iid)
    streams = {sid: len(container.app.stream(sid)) for sid in (UUID(iid), UUID(ticket["id"]))}
    calls = len(driver.calls)
    r = client.get(f"/api/admin/support/tickets/{ticket['id']}/triage", headers=ADMIN)
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["customer"]["email"] == "alice@example.com" and t["customer"]["billing"]["state"] == "good_standing"
    assert t["instance"]["id"] == iid and t["instance"]["status"] == "running" and t["instance"]["address"]
    assert t["node"] is None and "node" in t["node_note"]
    assert t["operations"][0]["kind"] == "create" and t["operations"][0]["phase"] == "succeeded"
    assert t["console"]["lines"][-1].endswith("Can't keep up!") and t["console"]["error"] is None
    assert t["drift"] is None and t["repairs"] == []
    # Read-only: nothing recorded on the ticket or the server, nothing done to the server.
    assert {sid: len(container.app.stream(sid)) for sid in streams} == streams
    assert len(driver.calls) == calls
    assert_problem(client.get(f"/api/admin/support/tickets/{ticket['id']}/triage", headers=alice), 403, "forbidden")
    plain = open_ticket(client, alice, subject="Billing question")
    assert client.get(f"/api/admin/support/tickets/{plain['id']}/triage", headers=ADMIN).json()["instance"] is None


def test_soak_report_from_a_dry_run_controller(client: TestClient, container: Container) -> None:
    alice = make_customer(client, "alice@example.com")
    iid = running_instance(client, alice)
    ctl = Controller(container.app, container.db, container.driver, container.edge,
                     InProcessLock(ttl=30, key=f"test-{uuid4().hex}"), mode="dry-run", interval=0.05,
                     zone=container.settings.dns_zone)
    record = next(r for r in container.edge.dns.list_records() if iid[:8] in r["name"])
    container.edge.dns.remove(record["name"], ownership_comment(iid))
    ctl.tick()
    assert container.wait_for_projections(container.app.head(), ("repairs",), timeout=20)
    report = client.get("/api/admin/repairs/report", params={"since": "1d"}, headers=ADMIN)
    assert report.status_code == 200, report.text
    body = report.json()
    edge = next(k for k in body["kinds"] if k["kind"] == "edge_republish")
    assert (edge["proposed"], edge["would_run"], edge["level"]) == (1, 1, 1)
    assert body["targets"][0]["target"] == f"instance:{iid}" and body["targets"][0]["drift_changes"] == 1
    assert body["verdict"] == "1 Level 1 repairs would have run; none touched a suspended server"
    assert body["mode"] == "dry-run"
    assert client.get("/api/admin/repairs/report", params={"since": "2000-01-01T00:00:00Z"},
                      headers=ADMIN).json()["would_run"] == 1
    assert_problem(client.get("/api/admin/repairs/report", params={"since": "last week"}, headers=ADMIN),
                   422, "validation_error")
    assert_problem(client.get("/api/admin/repairs/report", headers=alice), 403, "forbidden")
    triage = client.get(f"/api/admin/support/tickets/{open_ticket(client, alice, instance_id=iid)['id']}/triage",
                        headers=ADMIN).json()
    assert triage["drift"]["findings"][0]["kind"] == "srv_missing"
    assert triage["repairs"][0]["kind"] == "edge_republish"
