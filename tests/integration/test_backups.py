"""Backups stay in the customer's hands, on SQLite and PostgreSQL: list them all (deleted servers' too), delete one
through the node agent, never beside a restore, in every billing state."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from domain.backup import Backup
from services import billing
from services.adapters.fake_driver import FakeDriver
from services.bootstrap import Container
from services.lifecycle import request_backup_deletion
from services.ports import DriverError
from services.workers.provisioning import ProvisioningManager
from tests.billing_fixtures import body, invoice_event
from tests.integration.conftest import ADMIN_TOKEN, auth, poll
from tests.integration.test_api import assert_problem, create, make_customer, wait_operation


def running_instance(client: TestClient, headers: dict[str, str], key: str = "k1",
                     name: str = "alpha") -> str:
    accepted = create(client, headers, key, {"kind": "game", "name": name, "template": "minecraft"}).json()
    assert wait_operation(client, headers, accepted["operation_id"])["phase"] == "succeeded"
    return accepted["instance_id"]


def listed(client: TestClient, headers: dict[str, str]) -> list[dict]:
    return client.get("/api/backups", headers=headers).json()["items"]


def gone(client: TestClient, headers: dict[str, str], backup_id: str) -> None:
    """Wait until the backups read model has the deletion the operation recorded (it follows the log)."""
    poll(lambda: {b["id"] for b in listed(client, headers)}, lambda ids: backup_id not in ids)


def backup(client: TestClient, headers: dict[str, str], instance_id: str) -> str:
    r = client.post(f"/api/instances/{instance_id}/backups", headers=headers)
    assert r.status_code == 202, r.text
    assert wait_operation(client, headers, r.json()["operation_id"])["phase"] == "succeeded"
    return r.json()["backup_id"]


def test_customers_list_and_delete_their_backups(client: TestClient, driver: FakeDriver) -> None:
    alice, bob = make_customer(client, "alice@example.com"), make_customer(client, "bob@example.com")
    alpha = running_instance(client, alice)
    beta = running_instance(client, alice, "k2", "beta")
    made = [backup(client, alice, alpha), backup(client, alice, alpha), backup(client, alice, beta)]
    # The operations read model says they succeeded; the backups read model follows on its own.
    poll(lambda: client.get("/api/backups", headers=alice).json()["items"],
         lambda items: len(items) == 3 and all(b["status"] == "completed" for b in items))

    page = client.get("/api/backups?limit=2", headers=alice).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = client.get("/api/backups", params={"limit": 2, "cursor": page["next_cursor"]}, headers=alice).json()
    assert rest["next_cursor"] is None
    items = page["items"] + rest["items"]
    assert sorted(b["id"] for b in items) == sorted(made)
    assert {b["instance_id"] for b in items} == {alpha, beta}
    assert all(b["status"] == "completed" and b["size"] for b in items)
    assert [b["created_at"] for b in items] == sorted((b["created_at"] for b in items), reverse=True)
    assert_problem(client.get("/api/backups?cursor=nonsense", headers=alice), 400, "bad_cursor")
    assert client.get("/api/backups", headers=bob).json() == {"items": [], "next_cursor": None}

    # A deleted server's backups are still listed, and still the customer's to delete.
    deleted = client.delete(f"/api/instances/{beta}", headers=alice).json()
    assert wait_operation(client, alice, deleted["operation_id"])["phase"] == "succeeded"
    assert made[2] in {b["id"] for b in client.get("/api/backups", headers=alice).json()["items"]}
    r = client.delete(f"/api/backups/{made[2]}", headers=alice)
    assert r.status_code == 202 and r.headers["Location"] == f"/api/operations/{r.json()['operation_id']}"
    op = wait_operation(client, alice, r.json()["operation_id"])
    assert op["phase"] == "succeeded" and op["kind"] == "delete_backup"
    assert ("delete_backup", UUID(made[2])) in driver.calls and UUID(made[2]) not in driver.backups
    gone(client, alice, made[2])
    assert client.delete(f"/api/backups/{made[2]}", headers=alice).status_code == 204  # already done

    # Through the instance's route; someone else's backup, or the wrong instance, is 404.
    assert_problem(client.delete(f"/api/backups/{made[0]}", headers=bob), 404, "not_found")
    assert_problem(client.delete(f"/api/instances/{beta}/backups/{made[0]}", headers=alice), 404, "not_found")
    assert_problem(client.delete(f"/api/instances/{alpha}/backups/{alpha}", headers=alice), 404, "not_found")
    r = client.delete(f"/api/instances/{alpha}/backups/{made[0]}", headers=alice)
    assert r.status_code == 202 and wait_operation(client, alice, r.json()["operation_id"])["phase"] == "succeeded"
    gone(client, alice, made[0])
    remaining = client.get(f"/api/instances/{alpha}/backups", headers=alice).json()["items"]
    assert [b["id"] for b in remaining] == [made[1]]
    r = client.delete(f"/api/backups/{made[1]}", headers=auth(ADMIN_TOKEN))  # operators may, for the customer
    assert r.status_code == 202 and wait_operation(client, alice, r.json()["operation_id"])["phase"] == "succeeded"
    gone(client, alice, made[1])


def test_a_failed_deletion_leaves_the_backup_as_it_was(client: TestClient, driver: FakeDriver) -> None:
    alice = make_customer(client, "alice@example.com")
    alpha = running_instance(client, alice)
    made = backup(client, alice, alpha)
    driver.fail_on["delete_backup"] = DriverError("agent_timeout", "the node agent did not answer")
    r = client.delete(f"/api/backups/{made}", headers=alice)
    op = wait_operation(client, alice, r.json()["operation_id"])
    assert op["phase"] == "failed" and op["error"]["code"] == "agent_timeout"
    poll(lambda: [(b["id"], b["status"]) for b in listed(client, alice)], lambda s: s == [(made, "completed")])
    del driver.fail_on["delete_backup"]
    restore = client.post(f"/api/instances/{alpha}/backups/{made}/restore", headers=alice)  # still restorable
    assert wait_operation(client, alice, restore.json()["operation_id"])["phase"] == "succeeded"
    r = client.delete(f"/api/backups/{made}", headers=alice)
    assert wait_operation(client, alice, r.json()["operation_id"])["phase"] == "succeeded"


@pytest.fixture
def by_hand(make_container: Callable[..., Container]) -> Iterator[tuple[Container, TestClient, Callable[[str], None]]]:
    """A control plane whose operations run only when the test says so (`drive(operation_id)`)."""
    container = make_container(workers=("projections",))
    pm = ProvisioningManager(container.app, container.db, container.driver, container.edge, worker_id="t",
                             concurrency=1)

    def drive(operation_id: str) -> None:
        assert pm.claim(UUID(operation_id))
        pm.execute(UUID(operation_id))

    with TestClient(create_app(container)) as client:
        yield container, client, drive
    pm.stop(wait=True)


def test_no_deletion_beside_a_restore(by_hand: tuple[Container, TestClient, Callable[[str], None]]) -> None:
    container, client, drive = by_hand
    alice = make_customer(client, "alice@example.com")
    accepted = create(client, alice, "k1").json()
    drive(accepted["operation_id"])
    alpha = accepted["instance_id"]
    queued = client.post(f"/api/instances/{alpha}/backups", headers=alice).json()
    assert_problem(client.delete(f"/api/backups/{queued['backup_id']}", headers=alice), 409,
                   "operation_in_progress")  # still being made
    drive(queued["operation_id"])
    made = queued["backup_id"]

    restore = client.post(f"/api/instances/{alpha}/backups/{made}/restore", headers=alice).json()
    assert_problem(client.delete(f"/api/backups/{made}", headers=alice), 409, "operation_in_progress")
    drive(restore["operation_id"])
    deletion = client.delete(f"/api/backups/{made}", headers=alice)
    assert deletion.status_code == 202
    again = client.delete(f"/api/backups/{made}", headers=alice)  # under way: the same operation
    assert again.status_code == 202 and again.json()["operation_id"] == deletion.json()["operation_id"]
    assert_problem(client.post(f"/api/instances/{alpha}/backups/{made}/restore", headers=alice), 409,
                   "illegal_transition")  # a backup being deleted is not restorable
    assert client.get("/api/backups", headers=alice).json()["items"][0]["status"] == "deleting"
    drive(deletion.json()["operation_id"])
    backup_now = container.app.find(UUID(made), Backup)
    assert backup_now is not None and backup_now.status == "deleted"
    gone(client, alice, made)


def test_concurrent_deletions_make_one_operation(by_hand: tuple[Container, TestClient, Callable[[str], None]]) -> None:
    container, client, drive = by_hand
    alice = make_customer(client, "alice@example.com")
    accepted = create(client, alice, "k1").json()
    drive(accepted["operation_id"])
    queued = client.post(f"/api/instances/{accepted['instance_id']}/backups", headers=alice).json()
    drive(queued["operation_id"])
    owner = UUID(client.get("/api/me", headers=alice).json()["id"])
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: request_backup_deletion(container.app, owner, UUID(queued["backup_id"])),
                                range(8)))
    assert len({r.operation_id for r in results if r is not None}) == 1 and None not in results


def test_deleting_a_backup_is_allowed_in_every_billing_state(make_container: Callable[..., Container]) -> None:
    container = make_container()
    with TestClient(create_app(container)) as client:
        alice = make_customer(client, "alice@example.com")
        alpha = running_instance(client, alice)
        made = backup(client, alice, alpha)
        uid = UUID(client.get("/api/me", headers=alice).json()["id"])
        now = datetime.now(UTC)
        event = invoice_event("evt_1", "payment_failed", "in_1", "cus_a", int(now.timestamp()))
        billing.link_customer(container.app, uid, "cus_a", container.schedule)
        billing.record_stripe_event(container.app, event, body(event), container.schedule)
        entered = billing.enforce(container.app, uid, container.schedule, now + timedelta(days=8))
        assert [s.value for s in entered][-1] == "suspended"
        assert client.post(f"/api/instances/{alpha}/backups", headers=alice).status_code == 402
        r = client.delete(f"/api/backups/{made}", headers=alice)
        assert r.status_code == 202, r.text
        assert wait_operation(client, alice, r.json()["operation_id"])["phase"] == "succeeded"
        gone(client, alice, made)
