"""The HTTP contract of the foundation, on SQLite and on PostgreSQL, with the fake driver."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from projections.registry import all_projections
from services.adapters.fake_driver import FakeDriver
from services.bootstrap import Container
from services.ports import DriverError
from tests.integration.conftest import ADMIN_TOKEN, auth, poll

GAME = {"kind": "game", "name": "alpha", "template": "minecraft"}


def create(client: TestClient, headers: dict[str, str], key: str, body: dict | None = None):  # type: ignore[no-untyped-def]
    return client.post("/api/instances", json=body or GAME, headers={**headers, "Idempotency-Key": key})


def make_customer(client: TestClient, email: str) -> dict[str, str]:
    r = client.post("/api/admin/users", json={"email": email}, headers=auth(ADMIN_TOKEN))
    assert r.status_code == 201, r.text
    return auth(r.json()["token"])


def wait_operation(client: TestClient, headers: dict[str, str], operation_id: str) -> dict:
    return poll(lambda: client.get(f"/api/operations/{operation_id}", headers=headers).json(),
                lambda op: op["phase"] in ("succeeded", "failed"))


def assert_problem(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code and body["status"] == status
    assert {"type", "title", "detail"} <= set(body)


def test_probes(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "zlh_http_requests_total" in metrics.text
    assert client.get("/openapi.json").json()["info"]["title"] == "ZLH control plane"


def test_authentication_and_admin_checks(client: TestClient, admin: dict, new_user: Callable) -> None:
    assert_problem(client.get("/api/me"), 401, "unauthorized")
    assert_problem(client.get("/api/me", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
    me = client.get("/api/me", headers=admin).json()
    assert me["admin"] is True
    alice = new_user("alice@example.com")
    alice_me = client.get("/api/me", headers=alice).json()
    assert {k: alice_me[k] for k in ("email", "admin", "scope")} == {
        "email": "alice@example.com", "admin": False, "scope": "full"}
    assert_problem(client.post("/api/admin/users", json={"email": "x@example.com"}, headers=alice), 403, "forbidden")
    assert_problem(client.post("/api/admin/users", json={"email": "alice@example.com"}, headers=admin),
                   409, "email_taken")
    assert_problem(client.post("/api/admin/users", json={"email": "not-an-email"}, headers=admin),
                   422, "validation_error")
    # Operators list every user at once after creating one (read-your-writes), and never see a token.
    listed = client.get("/api/admin/users", headers=admin)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert items[0]["email"] == "alice@example.com" and items[0]["billing_state"] == "good_standing"
    assert {u["email"] for u in items} == {"alice@example.com", "admin@zlh.localhost"}
    assert "token" not in listed.text
    assert_problem(client.get("/api/admin/users", headers=alice), 403, "forbidden")


def test_create_is_async_and_reaches_running(make_container: Callable[..., Container]) -> None:
    # Provisioning starts only after the pending state has been observed: no race with the worker.
    container = make_container(workers=("projections",))
    client = TestClient(create_app(container))
    alice = make_customer(client, "alice@example.com")
    r = create(client, alice, "k-1")
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["location"] == body["status_url"] == f"/api/operations/{body['operation_id']}"
    assert r.headers["zlh-read-your-writes"] == "caught-up"
    # Read-your-writes: the pending instance is listed at once, with its operation.
    items = client.get("/api/instances", headers=alice).json()["items"]
    assert [i["id"] for i in items] == [body["instance_id"]]
    assert items[0]["pending_operation_id"] == body["operation_id"]
    assert items[0]["status"] == "provisioning"
    assert items[0]["pending_operation"] == {"id": body["operation_id"], "kind": "create", "phase": "queued",
                                             "step": None}
    assert client.get(body["status_url"], headers=alice).json()["phase"] == "queued"
    container.start(("provisioning",))
    operation = wait_operation(client, alice, body["operation_id"])
    assert operation["phase"] == "succeeded" and operation["error"] is None
    assert operation["kind"] == "create" and operation["instance_id"] == body["instance_id"]
    instance = poll(lambda: client.get(f"/api/instances/{body['instance_id']}", headers=alice).json(),
                    lambda i: i["status"] == "running")
    assert instance["address"] and instance["pending_operation_id"] is None
    assert instance["kind"] == "game" and instance["name"] == "alpha" and instance["template"] == "minecraft"


def test_a_read_your_writes_wait_that_runs_out_is_reported(make_container: Callable[..., Container],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Only the read models the caller reads next are waited for, and a timeout is visible, not hidden."""
    container = make_container(workers=(), read_your_writes_timeout=0.05)  # no read model follows the log
    client = TestClient(create_app(container))
    alice = make_customer(client, "alice@example.com")  # times out on `users` too; the token works regardless
    r = create(client, alice, "k-1")
    assert r.status_code == 202, r.text
    assert r.headers["zlh-read-your-writes"] == "timeout; views=instances,operations"
    assert "read-your-writes timed out" in caplog.text and "'instances'" in caplog.text
    for name in ("instances", "operations"):
        container.runners[name].catch_up()
    again = create(client, alice, "k-1")  # a replay waits for the same read models, now caught up
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["zlh-read-your-writes"] == "caught-up"


def test_idempotency_key_semantics(client: TestClient, new_user: Callable) -> None:
    alice = new_user("alice@example.com")
    first = create(client, alice, "same-key")
    again = create(client, alice, "same-key")
    assert again.status_code == 202 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert_problem(create(client, alice, "same-key", {**GAME, "name": "beta"}), 422, "idempotency_key_reused")
    assert_problem(client.post("/api/instances", json=GAME, headers=alice), 400, "idempotency_key_missing")
    assert_problem(create(client, alice, "x" * 256), 400, "idempotency_key_invalid")
    # Keys are scoped to the caller: bob's same key is a different request.
    bob = new_user("bob@example.com")
    assert create(client, bob, "same-key").json()["operation_id"] != first.json()["operation_id"]
    assert len(client.get("/api/instances", headers=alice).json()["items"]) == 1


def test_validation_and_name_rules(client: TestClient, new_user: Callable) -> None:
    alice = new_user("alice@example.com")
    for bad in ({**GAME, "name": "Alpha"}, {**GAME, "name": "9lives"}, {**GAME, "name": "a" * 64},
                {**GAME, "kind": "vm"}, {"kind": "game"}, {**GAME, "extra": 1}):
        assert_problem(create(client, alice, "bad", bad), 422, "validation_error")
    assert_problem(create(client, alice, "t", {**GAME, "template": "python"}), 422, "unknown_template")
    assert create(client, alice, "one").status_code == 202
    assert_problem(create(client, alice, "two"), 409, "name_taken")
    # Nothing was written by the rejected requests.
    assert len(client.get("/api/instances", headers=alice).json()["items"]) == 1


def test_other_customers_get_404(client: TestClient, new_user: Callable) -> None:
    alice, bob = new_user("alice@example.com"), new_user("bob@example.com")
    body = create(client, alice, "k").json()
    assert_problem(client.get(f"/api/instances/{body['instance_id']}", headers=bob), 404, "not_found")
    assert_problem(client.get(f"/api/operations/{body['operation_id']}", headers=bob), 404, "not_found")
    assert client.get("/api/instances", headers=bob).json() == {"items": [], "next_cursor": None}
    # An id of the wrong shape names nothing, like an id of another kind or customer: 404 too.
    assert_problem(client.get("/api/instances/not-a-uuid", headers=alice), 404, "not_found")


def test_failed_step_fails_the_operation_and_nothing_retries(
    client: TestClient, new_user: Callable, driver: FakeDriver
) -> None:
    driver.fail_on["wait_connectable"] = DriverError("not_connectable", "the server never accepted a connection")
    alice = new_user("alice@example.com")
    body = create(client, alice, "k").json()
    operation = wait_operation(client, alice, body["operation_id"])
    assert operation["phase"] == "failed"
    assert operation["error"] == {"code": "not_connectable", "message": "the server never accepted a connection"}
    instance = poll(lambda: client.get(f"/api/instances/{body['instance_id']}", headers=alice).json(),
                    lambda i: i["pending_operation_id"] is None)
    assert instance["status"] == "failed"
    assert sum(1 for method, _ in driver.calls if method == "wait_connectable") == 1


def test_admin_reads_streams(client: TestClient, admin: dict, new_user: Callable) -> None:
    alice = new_user("alice@example.com")
    body = create(client, alice, "k").json()
    wait_operation(client, alice, body["operation_id"])
    stream = client.get(f"/api/admin/streams/{body['operation_id']}/events", headers=admin).json()
    types = [e["type"] for e in stream["events"]]
    assert types[0] == "zlh.Operation.Requested" and types[1] == "zlh.Operation.Claimed"
    assert types[-1] == "zlh.Operation.Succeeded"
    assert [e["version"] for e in stream["events"]] == list(range(1, len(types) + 1))
    started = [e["data"]["step"] for e in stream["events"] if e["type"] == "zlh.Operation.StepStarted"]
    finished = [e["data"]["step"] for e in stream["events"] if e["type"] == "zlh.Operation.StepSucceeded"]
    assert started == finished == ["place", "allocate_port", "create_directory", "install", "start_process",
                                   "wait_connectable", "publish_dns", "publish_proxy"]
    assert_problem(client.get(f"/api/admin/streams/{body['operation_id']}/events", headers=alice), 403, "forbidden")
    assert_problem(client.get("/api/admin/streams/00000000-0000-0000-0000-000000000000/events", headers=admin),
                   404, "not_found")


def test_projection_rebuild_keeps_rows(client: TestClient, admin: dict, new_user: Callable,
                                       container: Container) -> None:
    alice = new_user("alice@example.com")
    for n in range(3):
        body = create(client, alice, f"k{n}", {**GAME, "name": f"s{n}"}).json()
        wait_operation(client, alice, body["operation_id"])
    # Projections advance independently: wait until the instances view has applied everything too.
    before = poll(lambda: client.get("/api/instances", headers=alice).json(),
                  lambda b: all(i["status"] == "running" for i in b["items"]))
    assert client.post("/api/admin/projections/instances/rebuild", headers=admin).status_code == 202
    poll(lambda: {p["name"]: p for p in client.get("/api/admin/projections", headers=admin).json()["items"]},
         lambda ps: ps["instances"]["rebuild"]["state"] == "done")
    assert client.get("/api/instances", headers=alice).json() == before
    items = client.get("/api/admin/projections", headers=admin).json()["items"]
    assert {i["name"] for i in items} == {p.name for p in all_projections()}
    assert all(i["lag"] >= 0 and i["position"] > 0 for i in items)
    assert_problem(client.post("/api/admin/projections/nope/rebuild", headers=admin), 404, "not_found")


def test_step_delay_pauses_before_every_step(make_container: Callable[..., Container]) -> None:
    container = make_container(local_step_delay=0.05)
    client = TestClient(create_app(container))
    alice = make_customer(client, "alice@example.com")
    body = create(client, alice, "k").json()
    assert wait_operation(client, alice, body["operation_id"])["phase"] == "succeeded"
    events = container.app.stream(UUID(body["operation_id"]))
    claimed = next(e for e in events if type(e).__name__ == "Claimed").timestamp
    succeeded = events[-1].timestamp
    # Six steps, each preceded by a 50 ms pause: a lower bound only, so never flaky on a slow machine.
    assert (succeeded - claimed).total_seconds() >= 6 * 0.05
