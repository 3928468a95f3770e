"""Subusers over HTTP, on SQLite and PostgreSQL: inviting by email, what a subuser sees and may do, the owner's
rights that stay the owner's, the activity log naming who did what, and concurrent invitations."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from domain.ids import user_id_for_email
from domain.subuser import PERMISSIONS, Subuser, SubuserExistsError, subuser_id
from services import subusers
from services.bootstrap import Container
from services.server_access import MANAGE, authorize
from tests.integration.conftest import poll
from tests.integration.test_api import assert_problem, make_customer, wait_operation
from tests.integration.test_console import ConsoleDriver, closed_with, ticket_path
from tests.integration.test_lifecycle import running_instance


@pytest.fixture
def driver() -> ConsoleDriver:
    return ConsoleDriver()


def invite(client: TestClient, owner: dict, iid: str, email: str, permissions: list[str]) -> dict:
    r = client.post(f"/api/instances/{iid}/subusers", json={"email": email, "permissions": permissions},
                    headers=owner)
    assert r.status_code == 201, r.text
    return r.json()


def set_permissions(client: TestClient, owner: dict, iid: str, user_id: str, permissions: list[str]) -> None:
    r = client.patch(f"/api/instances/{iid}/subusers/{user_id}", json={"permissions": permissions}, headers=owner)
    assert r.status_code == 200 and r.json()["permissions"] == [p for p in PERMISSIONS if p in permissions], r.text


def activity(client: TestClient, owner: dict, iid: str) -> list[dict]:
    r = client.get(f"/api/instances/{iid}/activity", headers=owner)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_invite_see_act_change_remove(client: TestClient) -> None:
    alice = make_customer(client, "alice@example.com")
    bob = make_customer(client, "bob@example.com")
    iid = running_instance(client, alice)
    mine = running_instance(client, bob, "bobs-own")

    member = invite(client, alice, iid, "  Bob@Example.com ", ["power", "console", "power"])
    assert member["email"] == "bob@example.com" and member["permissions"] == ["console", "power"]
    assert member["user_id"] == str(user_id_for_email("bob@example.com"))
    listed = client.get(f"/api/instances/{iid}/subusers", headers=alice).json()
    assert [m["email"] for m in listed["items"]] == ["bob@example.com"] and listed["next_cursor"] is None

    # Bob sees the server beside his own, marked with his role and permissions.
    items = {i["id"]: i for i in client.get("/api/instances", headers=bob).json()["items"]}
    assert set(items) == {iid, mine}
    assert items[iid]["role"] == "subuser" and items[iid]["permissions"] == ["console", "power"]
    assert items[mine]["role"] == "owner" and items[mine]["permissions"] == list(PERMISSIONS)
    got = client.get(f"/api/instances/{iid}", headers=bob).json()
    assert got["role"] == "subuser" and got["permissions"] == ["console", "power"]
    assert client.get(f"/api/instances/{iid}", headers=alice).json()["role"] == "owner"
    # Alice does not see Bob's own server.
    assert [i["id"] for i in client.get("/api/instances", headers=alice).json()["items"]] == [iid]

    # Bob restarts it; the operation is his to follow; files are not his.
    r = client.post(f"/api/instances/{iid}/power", json={"action": "restart"}, headers=bob)
    assert r.status_code == 202, r.text
    assert wait_operation(client, bob, r.json()["operation_id"])["phase"] == "succeeded"
    denied = client.get(f"/api/instances/{iid}/files", headers=bob)
    assert_problem(denied, 403, "permission_denied")
    assert denied.json()["permission"] == "files.read"
    set_permissions(client, alice, iid, member["user_id"], ["console", "power", "files.read"])
    assert client.get(f"/api/instances/{iid}/files", headers=bob).status_code == 200

    # Billing and quotas stay the owner's: Bob's billing is his own account's.
    assert client.get("/api/billing", headers=bob).status_code == 200
    assert all(b["instance_id"] != iid for b in client.get("/api/backups", headers=bob).json()["items"])

    assert client.delete(f"/api/instances/{iid}/subusers/{member['user_id']}", headers=alice).status_code == 204
    assert_problem(client.get(f"/api/instances/{iid}", headers=bob), 404, "not_found")
    assert_problem(client.post(f"/api/instances/{iid}/power", json={"action": "stop"}, headers=bob), 404, "not_found")
    assert [i["id"] for i in client.get("/api/instances", headers=bob).json()["items"]] == [mine]
    assert_problem(client.delete(f"/api/instances/{iid}/subusers/{member['user_id']}", headers=alice), 404,
                   "not_found")

    # The owner sees who did what.
    log = activity(client, alice, iid)
    by_action = {}
    for item in log:
        by_action.setdefault(item["action"], item)
    assert by_action["power.restart"]["actor"]["email"] == "bob@example.com"
    assert by_action["subuser.add"]["actor"]["email"] == "alice@example.com"
    assert by_action["subuser.add"]["detail"]["email"] == "bob@example.com"
    assert by_action["subuser.update"]["detail"]["permissions"] == ["console", "power", "files.read"]
    assert by_action["subuser.update"]["detail"]["previous"] == ["console", "power"]
    assert by_action["subuser.remove"]["detail"]["user_id"] == member["user_id"]


def test_an_unknown_email_answers_like_a_known_one_and_takes_effect_with_the_account(client: TestClient) -> None:
    alice = make_customer(client, "owner@example.com")
    make_customer(client, "known@example.com")
    iid = running_instance(client, alice)
    known = invite(client, alice, iid, "known@example.com", ["power"])
    unknown = invite(client, alice, iid, "nobody-yet@example.com", ["power"])
    assert set(known) == set(unknown)
    assert {k for k, v in known.items() if v != unknown[k]} == {"user_id", "email", "created_at", "updated_at"}
    later = make_customer(client, "nobody-yet@example.com")
    assert client.get(f"/api/instances/{iid}", headers=later).json()["role"] == "subuser"


def test_only_the_owner_manages_and_deletes(client: TestClient) -> None:
    alice = make_customer(client, "o@example.com")
    bob = make_customer(client, "b@example.com")
    carol = make_customer(client, "c@example.com")
    iid = running_instance(client, alice)
    invite(client, alice, iid, "b@example.com", list(PERMISSIONS))
    for method, path, body in (("post", f"/api/instances/{iid}/subusers", {"email": "c@example.com",
                                                                         "permissions": []}),
                               ("get", f"/api/instances/{iid}/subusers", None),
                               ("get", f"/api/instances/{iid}/activity", None),
                               ("delete", f"/api/instances/{iid}", None)):
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        assert_problem(client.request(method, path, headers=bob, **kwargs), 403, "permission_denied")
        assert_problem(client.request(method, path, headers=carol, **kwargs), 404, "not_found")
    # Bad input: unknown permission, the owner themselves, a bad email, twice the same person.
    for body in ({"email": "c@example.com", "permissions": ["root"]},
                 {"email": "o@example.com", "permissions": []},
                 {"email": "not an email", "permissions": []},
                 {"email": "c@example.com", "permissions": ["power"], "admin": True},
                 {"email": "c@example.com"}):
        assert_problem(client.post(f"/api/instances/{iid}/subusers", json=body, headers=alice), 422,
                       "validation_error")
    assert_problem(client.post(f"/api/instances/{iid}/subusers", json={"email": "B@example.com", "permissions": []},
                               headers=alice), 409, "subuser_exists")
    assert_problem(client.patch(f"/api/instances/{iid}/subusers/{user_id_for_email('c@example.com')}",
                                json={"permissions": []}, headers=alice), 404, "not_found")
    bob_id = user_id_for_email("b@example.com")
    assert_problem(client.patch(f"/api/instances/{iid}/subusers/{bob_id}", json={"permissions": ["x"]},
                                headers=alice), 422, "validation_error")
    assert_problem(client.patch(f"/api/instances/{iid}/subusers/{iid}", json={"permissions": []}, headers=alice),
                   404, "not_found")


def test_a_subuser_cannot_schedule_what_they_could_not_do_by_hand(client: TestClient) -> None:
    alice = make_customer(client, "so@example.com")
    bob = make_customer(client, "sb@example.com")
    iid = running_instance(client, alice)
    member = invite(client, alice, iid, "sb@example.com", ["schedules", "console"])
    url = f"/api/instances/{iid}/schedules"
    restart = {"name": "restart", "cron": "@daily", "tasks": [{"action": "power", "payload": "restart"}]}
    say = {"name": "say", "cron": "@daily", "tasks": [{"action": "command", "payload": "say hi"}]}
    r = client.post(url, json=restart, headers=bob)
    assert_problem(r, 403, "permission_denied")
    assert r.json()["permission"] == "power"
    sid = client.post(url, json=say, headers=bob).json()["id"]
    assert_problem(client.patch(f"{url}/{sid}", json={"tasks": restart["tasks"]}, headers=bob), 403,
                   "permission_denied")
    owners = client.post(url, json=restart, headers=alice).json()["id"]
    for method, path in (("post", f"{url}/{owners}/run"), ("delete", f"{url}/{owners}"),
                         ("patch", f"{url}/{owners}")):
        kwargs: dict[str, Any] = {"json": {"name": "mine"}} if method == "patch" else {}
        assert_problem(client.request(method, path, headers=bob, **kwargs), 403, "permission_denied")
    assert client.get(f"{url}/{owners}", headers=bob).status_code == 200  # reading is the schedules permission
    set_permissions(client, alice, iid, member["user_id"], ["schedules", "console", "power"])
    assert client.patch(f"{url}/{owners}", json={"name": "bob's now"}, headers=bob).status_code == 200
    created = [i for i in activity(client, alice, iid) if i["action"] == "schedule.create"]
    assert {i["actor"]["email"] for i in created} == {"so@example.com", "sb@example.com"}


def test_the_console_closes_when_the_permission_is_taken_away(client: TestClient) -> None:
    alice = make_customer(client, "co@example.com")
    bob = make_customer(client, "cb@example.com")
    iid = running_instance(client, alice)
    member = invite(client, alice, iid, "cb@example.com", ["console"])
    with client.websocket_connect(ticket_path(client, bob, iid)) as ws:
        ws.send_text("say from bob")
        assert ws.receive_text() == "[server] from bob"
        set_permissions(client, alice, iid, member["user_id"], ["power"])
        ws.send_text("say after")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 4403
    commands = [i for i in activity(client, alice, iid) if i["action"] == "console.command"]
    assert [(c["detail"]["command"], c["actor"]["email"]) for c in commands] == [("say from bob", "cb@example.com")]
    assert_problem(client.post(f"/api/instances/{iid}/console", headers=bob), 403, "permission_denied")
    # A ticket issued before the permission went is refused when redeemed.
    set_permissions(client, alice, iid, member["user_id"], ["console"])
    path = ticket_path(client, bob, iid)
    set_permissions(client, alice, iid, member["user_id"], [])
    assert closed_with(client, path)[0] == 4403


def test_two_invitations_at_once_make_one_membership(container: Container, client: TestClient) -> None:
    alice = make_customer(client, "race@example.com")
    iid = running_instance(client, alice)
    owner_id = UUID(client.get("/api/me", headers=alice).json()["id"])
    grant = authorize(container.app, owner_id, False, UUID(iid), MANAGE)
    barrier = threading.Barrier(6)

    def one(n: int) -> str:
        barrier.wait()
        try:
            subusers.invite(container.app, grant, owner_id, "twice@example.com", [PERMISSIONS[n % len(PERMISSIONS)]])
            return "created"
        except SubuserExistsError:
            return "exists"

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(one, range(6)))
    assert sorted(outcomes) == ["created"] + ["exists"] * 5
    stream = container.app.stream(subuser_id(UUID(iid), user_id_for_email("twice@example.com")))
    assert [type(e) for e in stream] == [Subuser.Added]

    # And over HTTP: one 201, the others 409.
    def post(_: int) -> int:
        return client.post(f"/api/instances/{iid}/subusers", json={"email": "thrice@example.com", "permissions": []},
                           headers=alice).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = sorted(pool.map(post, range(4)))
    assert codes == [201, 409, 409, 409]
    members = poll(lambda: client.get(f"/api/instances/{iid}/subusers", headers=alice).json()["items"],
                   lambda items: len(items) == 2)
    assert sorted(m["email"] for m in members) == ["thrice@example.com", "twice@example.com"]


def test_subusers_page(client: TestClient, new_user: Callable) -> None:
    alice = new_user("pages@example.com")
    iid = running_instance(client, alice)
    emails = [f"p{n}@example.com" for n in range(5)]
    for email in emails:
        invite(client, alice, iid, email, [])
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        body = client.get(f"/api/instances/{iid}/subusers", params=params, headers=alice).json()
        seen += [m["email"] for m in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == emails and len(seen) == 5


def test_settings_lets_a_subuser_rename_the_server(client: TestClient) -> None:
    alice = make_customer(client, "ro@example.com")
    bob = make_customer(client, "rb@example.com")
    iid = running_instance(client, alice, "first")
    other = running_instance(client, alice, "second")
    member = invite(client, alice, iid, "rb@example.com", ["power"])
    url = f"/api/instances/{iid}"
    assert_problem(client.patch(url, json={"name": "bobs"}, headers=bob), 403, "permission_denied")
    set_permissions(client, alice, iid, member["user_id"], ["settings"])
    renamed = client.patch(url, json={"name": "bobs"}, headers=bob)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "bobs" and renamed.json()["role"] == "subuser"
    assert client.get(url, headers=alice).json()["name"] == "bobs"
    # The owner's names stay unique; the old one is free again; bad names are 422.
    assert_problem(client.patch(url, json={"name": "second"}, headers=bob), 409, "name_taken")
    assert_problem(client.patch(url, json={"name": "Bad Name"}, headers=bob), 422, "validation_error")
    assert client.patch(f"/api/instances/{other}", json={"name": "first"}, headers=alice).status_code == 200
    assert client.patch(url, json={"name": "bobs"}, headers=bob).status_code == 200  # unchanged: nothing recorded
    # Not while an operation is pending.
    assert client.post(f"{url}/power", json={"action": "restart"}, headers=alice).status_code == 202
    r = client.patch(url, json={"name": "later"}, headers=bob)
    assert r.status_code in (200, 409), r.text  # the restart may have finished already on a fast machine
    renames = [i for i in activity(client, alice, iid) if i["action"] == "instance.rename"]
    assert renames[-1]["actor"]["email"] == "rb@example.com"
    assert renames[-1]["detail"] == {"name": "bobs", "previous": "first"}
