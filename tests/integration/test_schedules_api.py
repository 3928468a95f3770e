"""Schedules and the activity log over HTTP, on SQLite and PostgreSQL: create, list, change, pause, run now,
runs, delete, failures told to the customer, bad input, other customers' servers, pagination, and every action
in the activity log with its actor."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from services.adapters.fake_driver import FakeDriver
from services.bootstrap import Container
from tests.integration.conftest import ADMIN_TOKEN, auth, poll
from tests.integration.test_api import assert_problem, make_customer, wait_operation

NIGHTLY = {"name": "nightly restart", "cron": "0 4 * * *", "timezone": "Europe/Berlin",
           "tasks": [{"action": "command", "payload": "say restarting in 5 minutes"},
                     {"action": "power", "payload": "restart", "delay_seconds": 300}]}


@pytest.fixture
def setup(make_container: Callable[..., Container]) -> Iterator[tuple[Container, TestClient]]:
    container = make_container(workers=("projections", "provisioning", "schedules", "notifications"))
    with TestClient(create_app(container)) as client:
        yield container, client


def running_server(client: TestClient, headers: dict[str, str], name: str = "survival") -> str:
    r = client.post("/api/instances", json={"kind": "game", "name": name, "template": "minecraft"},
                    headers={**headers, "Idempotency-Key": f"make-{name}"})
    assert r.status_code == 202, r.text
    wait_operation(client, headers, r.json()["operation_id"])
    return r.json()["instance_id"]


def runs_of(client: TestClient, headers: dict[str, str], iid: str, sid: str, **params: Any) -> dict:
    r = client.get(f"/api/instances/{iid}/schedules/{sid}/runs", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def finished_run(client: TestClient, headers: dict[str, str], iid: str, sid: str, run_id: str) -> dict:
    return poll(lambda: client.get(f"/api/instances/{iid}/schedules/{sid}/runs/{run_id}", headers=headers).json(),
                lambda run: run.get("status") in ("succeeded", "failed", "skipped", "missed"))


def test_create_list_edit_pause_resume_delete(setup: tuple[Container, TestClient]) -> None:
    _, client = setup
    me = make_customer(client, "sched@example.com")
    iid = running_server(client, me)
    r = client.post(f"/api/instances/{iid}/schedules", json=NIGHTLY, headers=me)
    assert r.status_code == 201, r.text
    created = r.json()
    sid = created["id"]
    assert created["next_run_at"].endswith(("T02:00:00.000000Z", "T03:00:00.000000Z"))  # 04:00 in Berlin
    assert created["enabled"] and created["last_run"] is None and created["tasks"][1]["delay_seconds"] == 300
    assert r.headers["location"] == f"/api/instances/{iid}/schedules/{sid}"
    listed = client.get(f"/api/instances/{iid}/schedules", headers=me).json()
    assert [s["id"] for s in listed["items"]] == [sid] and listed["next_cursor"] is None
    assert listed["items"][0]["next_run_at"] == created["next_run_at"]

    paused = client.patch(f"/api/instances/{iid}/schedules/{sid}", json={"enabled": False}, headers=me)
    assert paused.status_code == 200 and paused.json()["next_run_at"] is None and not paused.json()["enabled"]
    resumed = client.patch(f"/api/instances/{iid}/schedules/{sid}", json={"enabled": True, "cron": "30 6 * * 1-5",
                                                                        "timezone": "UTC"}, headers=me).json()
    assert resumed["enabled"] and resumed["cron"] == "30 6 * * 1-5" and "T06:30:00" in resumed["next_run_at"]
    renamed = client.patch(f"/api/instances/{iid}/schedules/{sid}", json={"name": "weekday restart"}, headers=me)
    assert renamed.json()["name"] == "weekday restart" and renamed.json()["next_run_at"] == resumed["next_run_at"]

    assert client.delete(f"/api/instances/{iid}/schedules/{sid}", headers=me).status_code == 204
    assert client.get(f"/api/instances/{iid}/schedules", headers=me).json()["items"] == []
    assert_problem(client.get(f"/api/instances/{iid}/schedules/{sid}", headers=me), 404, "not_found")
    assert_problem(client.patch(f"/api/instances/{iid}/schedules/{sid}", json={"name": "x"}, headers=me), 404,
                   "not_found")
    assert_problem(client.post(f"/api/instances/{iid}/schedules/{sid}/run", headers=me), 404, "not_found")


def test_bad_input_is_refused_naming_the_field(setup: tuple[Container, TestClient]) -> None:
    _, client = setup
    me = make_customer(client, "bad@example.com")
    other = make_customer(client, "other@example.com")
    iid = running_server(client, me)
    url = f"/api/instances/{iid}/schedules"
    cases: list[tuple[dict, str]] = [
        (NIGHTLY | {"cron": "every day at 4"}, "cron:"),
        (NIGHTLY | {"cron": "61 4 * * *"}, "cron:"),
        (NIGHTLY | {"cron": "0 0 31 2 *"}, "cron:"),
        (NIGHTLY | {"timezone": "Mars/Olympus_Mons"}, "timezone:"),
        (NIGHTLY | {"timezone": "../../etc/passwd"}, "timezone:"),
        (NIGHTLY | {"tasks": []}, "tasks:"),
        (NIGHTLY | {"tasks": [{"action": "power", "payload": "explode"}]}, "tasks.0.payload:"),
        (NIGHTLY | {"tasks": [{"action": "backup"}, {"action": "command", "payload": "say a\nop eve"}]},
         "tasks.1.payload:"),
        (NIGHTLY | {"tasks": [{"action": "backup", "delay_seconds": 901}]}, "tasks.0.delay_seconds:"),
        (NIGHTLY | {"tasks": [{"action": "reboot"}]}, "tasks.0.action:"),
        (NIGHTLY | {"tasks": [{"action": "backup"}] * 11}, "tasks:"),
        (NIGHTLY | {"name": "bad\x00name"}, "name:"),
        (NIGHTLY | {"colour": "blue"}, "colour:"),
        ({k: v for k, v in NIGHTLY.items() if k != "cron"}, "cron:"),
    ]
    for body, where in cases:
        r = client.post(url, json=body, headers=me)
        assert_problem(r, 422, "validation_error")
        assert r.json()["detail"].startswith(where), (body, r.json()["detail"])
    sid = client.post(url, json=NIGHTLY, headers=me).json()["id"]
    r = client.patch(f"{url}/{sid}", json={"cron": "* * *"}, headers=me)
    assert_problem(r, 422, "validation_error")
    assert r.json()["detail"].startswith("cron:")
    r = client.patch(f"{url}/{sid}", json={"enabled": None}, headers=me)
    assert_problem(r, 422, "validation_error")
    assert r.json()["detail"].startswith("enabled:")
    assert_problem(client.get(f"{url}/{sid}/runs", params={"cursor": "not-ours"}, headers=me), 400, "bad_cursor")
    assert_problem(client.get(f"{url}/{sid}/runs", params={"limit": 0}, headers=me), 422, "validation_error")
    # Another customer's server and schedule are 404, like missing ones; so is a schedule under the wrong server.
    for method, path in (("get", url), ("post", url), ("get", f"{url}/{sid}"), ("patch", f"{url}/{sid}"),
                         ("delete", f"{url}/{sid}"), ("post", f"{url}/{sid}/run"), ("get", f"{url}/{sid}/runs"),
                         ("get", f"/api/instances/{iid}/activity")):
        kwargs: dict[str, Any] = {"json": NIGHTLY} if method == "post" and path == url else {}
        if method == "patch":
            kwargs = {"json": {"name": "mine now"}}
        assert_problem(getattr(client, method)(path, headers=other, **kwargs), 404, "not_found")
    other_iid = running_server(client, other, "theirs")
    assert_problem(client.get(f"/api/instances/{other_iid}/schedules/{sid}", headers=other), 404, "not_found")
    assert_problem(client.get(f"{url}/{iid}", headers=me), 404, "not_found")  # an instance id is no schedule id
    assert client.get(f"{url}/{sid}", headers=me).json()["name"] == NIGHTLY["name"]  # nothing changed it


def test_run_now_runs_every_task_and_records_the_run(setup: tuple[Container, TestClient], driver: FakeDriver) -> None:
    container, client = setup
    me = make_customer(client, "runner@example.com")
    iid = running_server(client, me)
    body = {"name": "chain", "cron": "@daily", "tasks": [
        {"action": "command", "payload": "say before"},
        {"action": "power", "payload": "restart"},
        {"action": "command", "payload": "say after"},
        {"action": "backup", "payload": None}]}
    sid = client.post(f"/api/instances/{iid}/schedules", json=body, headers=me).json()["id"]
    r = client.post(f"/api/instances/{iid}/schedules/{sid}/run", headers={**me, "Idempotency-Key": "now-1"})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    again = client.post(f"/api/instances/{iid}/schedules/{sid}/run", headers={**me, "Idempotency-Key": "now-1"})
    assert again.json()["run_id"] == run_id and again.headers["idempotent-replayed"] == "true"
    run = finished_run(client, me, iid, sid, run_id)
    assert run["status"] == "succeeded", run
    assert run["trigger"] == "manual" and run["started_at"] and run["finished_at"]
    assert [t["status"] for t in run["tasks"]] == ["succeeded"] * 4
    restart_op = run["tasks"][1]["operation_id"]
    # The operations read model follows the log on its own: it may show them a moment after the run's.
    for operation_id, kind in ((restart_op, "restart"), (run["tasks"][3]["operation_id"], "backup")):
        assert poll(lambda o=operation_id: client.get(f"/api/operations/{o}", headers=me).json(),
                    lambda op: op.get("phase") == "succeeded")["kind"] == kind
    spec_id = next(i for i in driver.commands if str(i) == iid)
    assert driver.commands[spec_id].count("say before") == 1 and driver.commands[spec_id].count("say after") == 1
    listed = client.get(f"/api/instances/{iid}/schedules", headers=me).json()["items"][0]
    assert listed["last_run"]["id"] == run_id and listed["last_run"]["status"] == "succeeded"
    poll(lambda: client.get(f"/api/instances/{iid}/backups", headers=me).json()["items"],
         lambda items: [b["status"] for b in items] == ["completed"])
    assert container.schedules is not None


def test_a_failing_run_tells_the_customer_once_a_day(setup: tuple[Container, TestClient]) -> None:
    container, client = setup
    me = make_customer(client, "told@example.com")
    iid = running_server(client, me)
    body = {"name": "bad start", "cron": "@daily", "tasks": [{"action": "power", "payload": "start"},
                                                             {"action": "command", "payload": "say never"}]}
    sid = client.post(f"/api/instances/{iid}/schedules", json=body, headers=me).json()["id"]
    first = client.post(f"/api/instances/{iid}/schedules/{sid}/run", headers=me).json()["run_id"]
    run = finished_run(client, me, iid, sid, first)
    assert run["status"] == "failed" and run["reason"]["code"] == "illegal_transition"
    assert [t["status"] for t in run["tasks"]] == ["failed", "not_run"]
    assert run["tasks"][0]["error"]["code"] == "illegal_transition"
    notices = poll(lambda: client.get("/api/announcements", headers=me).json()["items"],
                   lambda items: any("bad start" in a["title"] for a in items))
    assert [a["level"] for a in notices if "bad start" in a["title"]] == ["warning"]
    rows = poll(lambda: container.db.query("SELECT id, kind, channel, status FROM rm_deliveries "
                                           "WHERE kind = 'schedule_notice'"), lambda rows: len(rows) == 1)
    assert rows[0]["channel"] == "email"
    from uuid import UUID

    email = container.app.repository.get(UUID(rows[0]["id"])).message
    assert email["to"] == "told@example.com" and "bad start" in email["subject"]
    assert "illegal_transition" in email["body"]
    second = client.post(f"/api/instances/{iid}/schedules/{sid}/run", headers=me).json()["run_id"]
    assert finished_run(client, me, iid, sid, second)["status"] == "failed"
    # The same schedule failing again the same day: still one notice and one email.
    head = container.app.head()  # the second run's end is in the log: wait until the scheduler has read it
    assert container.schedules is not None
    poll(container.schedules.position, lambda position: position >= head)
    notices = client.get("/api/announcements", headers=me).json()["items"]
    assert len([a for a in notices if "bad start" in a["title"]]) == 1
    assert len(container.db.query("SELECT id FROM rm_deliveries WHERE kind = 'schedule_notice'")) == 1
    # Another customer sees none of it.
    other = make_customer(client, "bystander@example.com")
    assert not [a for a in client.get("/api/announcements", headers=other).json()["items"] if "bad" in a["title"]]


def test_runs_paginate_newest_first(setup: tuple[Container, TestClient]) -> None:
    _, client = setup
    me = make_customer(client, "pages@example.com")
    iid = running_server(client, me)
    sid = client.post(f"/api/instances/{iid}/schedules", json={
        "name": "hello", "cron": "@hourly", "tasks": [{"action": "command", "payload": "say hi"}]},
        headers=me).json()["id"]
    made = []
    for _ in range(5):
        made.append(client.post(f"/api/instances/{iid}/schedules/{sid}/run", headers=me).json()["run_id"])
        finished_run(client, me, iid, sid, made[-1])
    seen: list[str] = []
    cursor = None
    while True:
        page = runs_of(client, me, iid, sid, limit=2, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= 2
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))
    for _ in range(3):  # schedules paginate the same way
        client.post(f"/api/instances/{iid}/schedules", json={
            "name": "more", "cron": "@hourly", "tasks": [{"action": "backup"}]}, headers=me)
    first = client.get(f"/api/instances/{iid}/schedules", params={"limit": 3}, headers=me).json()
    second = client.get(f"/api/instances/{iid}/schedules", params={"limit": 3, "cursor": first["next_cursor"]},
                        headers=me).json()
    assert len(first["items"]) == 3 and len(second["items"]) == 1 and second["next_cursor"] is None
    assert second["items"][0]["id"] == sid
    from services.schedules import MAX_SCHEDULES_PER_INSTANCE

    for _ in range(MAX_SCHEDULES_PER_INSTANCE - 4):
        assert client.post(f"/api/instances/{iid}/schedules", json={
            "name": "fill", "cron": "@daily", "tasks": [{"action": "backup"}]}, headers=me).status_code == 201
    over = client.post(f"/api/instances/{iid}/schedules", json={
        "name": "one too many", "cron": "@daily", "tasks": [{"action": "backup"}]}, headers=me)
    assert_problem(over, 409, "quota_exceeded")
    names = [s["name"] for s in client.get(f"/api/instances/{iid}/schedules", params={"limit": 500},
                                            headers=me).json()["items"]]
    assert len(names) == MAX_SCHEDULES_PER_INSTANCE and "one too many" not in names


def test_deleting_the_server_deletes_its_schedules(setup: tuple[Container, TestClient]) -> None:
    container, client = setup
    me = make_customer(client, "gone@example.com")
    iid = running_server(client, me)
    sid = client.post(f"/api/instances/{iid}/schedules", json=NIGHTLY, headers=me).json()["id"]
    wait_operation(client, me, client.delete(f"/api/instances/{iid}", headers=me).json()["operation_id"])
    rows = poll(lambda: container.db.query("SELECT deleted, next_run_at FROM rm_schedules WHERE id = %s", (sid,)),
                lambda rows: rows and rows[0]["deleted"] == 1)
    assert rows[0]["next_run_at"] is None
    assert_problem(client.post(f"/api/instances/{iid}/schedules", json=NIGHTLY, headers=me), 409,
                   "illegal_transition")


def test_the_activity_log_names_who_did_what(setup: tuple[Container, TestClient], driver: FakeDriver) -> None:
    container, client = setup
    me = make_customer(client, "actor@example.com")
    admin = auth(ADMIN_TOKEN)
    iid = running_server(client, me)
    assert client.put(f"/api/instances/{iid}/files/content", params={"path": "/ops.txt"}, content=b"x" * 123,
                      headers=me).status_code == 204
    wait_operation(client, me, client.post(f"/api/instances/{iid}/power", json={"action": "stop"},
                                           headers=admin).json()["operation_id"])
    wait_operation(client, me, client.post(f"/api/instances/{iid}/power", json={"action": "start"},
                                           headers=me).json()["operation_id"])
    wait_operation(client, me, client.post(f"/api/instances/{iid}/backups", headers=me).json()["operation_id"])
    from services.activity import record_console_command

    me_id = client.get("/api/me", headers=me).json()["id"]
    from uuid import UUID

    record_console_command(container.app, UUID(iid), UUID(me_id), "say hello\x07")
    sid = client.post(f"/api/instances/{iid}/schedules", json={
        "name": "greet", "cron": "@daily", "tasks": [{"action": "command", "payload": "say hi"}]},
        headers=me).json()["id"]
    run_id = client.post(f"/api/instances/{iid}/schedules/{sid}/run", headers=me).json()["run_id"]
    finished_run(client, me, iid, sid, run_id)

    def actions() -> list[dict]:
        return client.get(f"/api/instances/{iid}/activity", headers=me).json()["items"]

    items = poll(actions, lambda items: any(i["action"] == "schedule.run" and i["detail"].get("status") ==
                                            "succeeded" for i in items))
    by_action = {i["action"]: i for i in reversed(items)}  # the newest of each
    assert [i["at"] for i in items] == sorted((i["at"] for i in items), reverse=True)
    assert by_action["instance.create"]["actor"] == {"id": me_id, "email": "actor@example.com", "kind": "user"}
    assert by_action["file.write"]["detail"] == {"path": "/ops.txt", "size": 123}
    assert by_action["power.stop"]["actor"]["email"] == "admin@zlh.localhost"
    assert by_action["power.stop"]["detail"]["status"] == "succeeded"
    assert by_action["power.start"]["actor"]["email"] == "actor@example.com"
    assert by_action["backup.create"]["detail"]["status"] == "succeeded"
    assert by_action["console.command"]["detail"] == {"command": "say hello\ufffd"}
    assert by_action["schedule.create"]["detail"]["name"] == "greet"
    assert by_action["schedule.run"]["actor"]["email"] == "actor@example.com"
    assert by_action["schedule.run"]["detail"]["trigger"] == "manual"
    assert "x" * 10 not in str(items)  # file contents never reach the log
    # Pages: newest first, no item twice, none lost.
    pages, cursor = [], None
    while True:
        page = client.get(f"/api/instances/{iid}/activity", params={"limit": 2, **({"cursor": cursor} if cursor
                                                                                   else {})}, headers=me).json()
        pages += page["items"]
        if (cursor := page["next_cursor"]) is None:
            break
    assert [i["id"] for i in pages] == [i["id"] for i in actions()]
    # An operator sees it too; another customer gets 404.
    assert client.get(f"/api/instances/{iid}/activity", headers=admin).status_code == 200
    other = make_customer(client, "nosy@example.com")
    assert_problem(client.get(f"/api/instances/{iid}/activity", headers=other), 404, "not_found")
