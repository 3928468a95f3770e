"""Power, delete with finalizers, backups and files over HTTP, on SQLite and PostgreSQL, with the fake driver."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from fastapi.testclient import TestClient

from api.app import create_app
from services.adapters.fake_driver import FakeDriver
from services.bootstrap import Container
from services.edge import Edge
from services.ports import DriverError
from tests.integration.conftest import poll
from tests.integration.test_api import GAME, assert_problem, create, make_customer, wait_operation


def running_instance(client: TestClient, headers: dict, name: str = "alpha") -> str:
    body = create(client, headers, f"create-{name}", {**GAME, "name": name}).json()
    assert wait_operation(client, headers, body["operation_id"])["phase"] == "succeeded"
    poll(lambda: client.get(f"/api/instances/{body['instance_id']}", headers=headers).json(),
         lambda i: i["status"] == "running")
    return body["instance_id"]


def run(client: TestClient, headers: dict, response) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == 202, response.text
    return wait_operation(client, headers, response.json()["operation_id"])


def finish_power(client: TestClient, headers: dict, iid: str, action: str, status: str) -> None:
    response = client.post(f"/api/instances/{iid}/power", json={"action": action}, headers=headers)
    assert run(client, headers, response)["phase"] == "succeeded"
    instance(client, headers, iid, status)


def instance(client: TestClient, headers: dict, iid: str, status: str) -> dict:
    return poll(lambda: client.get(f"/api/instances/{iid}", headers=headers).json(),
                lambda i: i["status"] == status and i["pending_operation_id"] is None)


def test_power_cycle_and_conflicts(client: TestClient, new_user: Callable, driver: FakeDriver) -> None:
    alice = new_user("alice@example.com")
    iid = running_instance(client, alice)
    power = f"/api/instances/{iid}/power"
    assert run(client, alice, client.post(power, json={"action": "stop"}, headers=alice))["phase"] == "succeeded"
    instance(client, alice, iid, "stopped")
    assert not driver.is_running(driver_spec(driver, iid), 0)
    assert_problem(client.post(power, json={"action": "stop"}, headers=alice), 409, "illegal_transition")
    assert run(client, alice, client.post(power, json={"action": "start"}, headers=alice))["phase"] == "succeeded"
    instance(client, alice, iid, "running")
    assert run(client, alice, client.post(power, json={"action": "restart"}, headers=alice))["phase"] == "succeeded"
    instance(client, alice, iid, "running")
    assert_problem(client.post(power, json={"action": "explode"}, headers=alice), 422, "validation_error")


def driver_spec(driver: FakeDriver, iid: str):  # type: ignore[no-untyped-def]
    from services.ports import InstanceSpec

    return InstanceSpec(UUID(iid), "game", "minecraft", "unused")


def test_operation_in_progress_is_409(make_container: Callable[..., Container]) -> None:
    container = make_container()
    client = TestClient(create_app(container))
    alice = make_customer(client, "alice@example.com")
    iid = running_instance(client, alice)
    container.provisioning.stop()  # nothing runs from now on: the next operation stays queued
    first = client.post(f"/api/instances/{iid}/power", json={"action": "stop"}, headers=alice)
    assert first.status_code == 202
    for attempt in ({"action": "start"}, {"action": "restart"}):
        assert_problem(client.post(f"/api/instances/{iid}/power", json=attempt, headers=alice),
                       409, "operation_in_progress")
    assert_problem(client.delete(f"/api/instances/{iid}", headers=alice), 409, "operation_in_progress")
    assert_problem(client.post(f"/api/instances/{iid}/backups", headers=alice), 409, "operation_in_progress")
    pending = client.get(f"/api/instances/{iid}", headers=alice).json()["pending_operation"]
    assert pending["id"] == first.json()["operation_id"] and pending["kind"] == "stop"


def test_delete_removes_everything_and_releases_the_name(client: TestClient, new_user: Callable,
                                                         driver: FakeDriver, edge: Edge) -> None:
    alice = new_user("alice@example.com")
    iid = running_instance(client, alice)
    assert edge.proxy.list_servers() and edge.dns.list_records()
    op = run(client, alice, client.delete(f"/api/instances/{iid}", headers=alice))
    assert op["phase"] == "succeeded" and op["kind"] == "delete"
    gone = instance(client, alice, iid, "deleted")
    assert gone["address"] is None
    assert edge.proxy.list_servers() == {} and edge.dns.list_records() == []
    assert UUID(iid) not in driver.processes and UUID(iid) not in driver.directories
    assert client.get("/api/instances", headers=alice).json() == {"items": [], "next_cursor": None}
    assert_problem(client.delete(f"/api/instances/{iid}", headers=alice), 409, "illegal_transition")
    # The name is free again.
    assert create(client, alice, "again", GAME).status_code == 202


def test_delete_of_a_failed_instance_cleans_up_what_exists(client: TestClient, new_user: Callable,
                                                           driver: FakeDriver) -> None:
    driver.fail_on["wait_connectable"] = DriverError("not_connectable", "never answered")
    alice = new_user("alice@example.com")
    body = create(client, alice, "k").json()
    assert wait_operation(client, alice, body["operation_id"])["phase"] == "failed"
    instance(client, alice, body["instance_id"], "failed")
    assert UUID(body["instance_id"]) in driver.directories  # half-provisioned: files exist
    assert run(client, alice, client.delete(f"/api/instances/{body['instance_id']}",
                                            headers=alice))["phase"] == "succeeded"
    assert UUID(body["instance_id"]) not in driver.directories


def test_interrupted_delete_resumes_without_double_effects(client: TestClient, new_user: Callable,
                                                           driver: FakeDriver, edge: Edge, admin: dict) -> None:
    alice = new_user("alice@example.com")
    iid = running_instance(client, alice)
    driver.fail_on["remove_directory"] = DriverError("io_error", "disk on fire")
    op = run(client, alice, client.delete(f"/api/instances/{iid}", headers=alice))
    assert op["phase"] == "failed" and op["error"]["code"] == "io_error"
    assert client.get(f"/api/instances/{iid}", headers=alice).json()["status"] == "deleting"
    del driver.fail_on["remove_directory"]
    assert run(client, alice, client.delete(f"/api/instances/{iid}", headers=alice))["phase"] == "succeeded"
    instance(client, alice, iid, "deleted")
    calls = [m for m, i in driver.calls if str(i) == iid]
    assert [m for m, _ in edge.proxy.calls].count("unregister") == 1
    assert [m for m, _ in edge.dns.calls].count("remove") == 1
    assert calls.count("remove_directory") == 2  # the failed attempt and the resumed one
    events = client.get(f"/api/admin/streams/{iid}/events", headers=admin).json()["events"]
    done = [e["data"]["finalizer"] for e in events if e["type"] == "zlh.Instance.FinalizerCompleted"]
    assert done == ["proxy", "dns", "process", "files"]


def test_backup_and_restore_bring_files_back(client: TestClient, new_user: Callable) -> None:
    alice = new_user("alice@example.com")
    iid = running_instance(client, alice)
    content = f"/api/instances/{iid}/files/content"
    assert client.put(content, params={"path": "/world/level.dat"}, content=b"v1", headers=alice).status_code == 204
    backup = client.post(f"/api/instances/{iid}/backups", headers=alice)
    assert backup.status_code == 202
    backup_id = backup.json()["backup_id"]
    assert run(client, alice, backup)["phase"] == "succeeded"
    items = poll(lambda: client.get(f"/api/instances/{iid}/backups", headers=alice).json()["items"],
                 lambda b: b and b[0]["status"] == "completed")
    assert items[0]["id"] == backup_id and items[0]["size"] > 0 and len(items[0]["sha256"]) == 64
    client.put(content, params={"path": "/world/level.dat"}, content=b"v2", headers=alice)
    assert client.get(content, params={"path": "/world/level.dat"}, headers=alice).content == b"v2"
    restore = client.post(f"/api/instances/{iid}/backups/{backup_id}/restore", headers=alice)
    assert run(client, alice, restore)["phase"] == "succeeded"
    assert client.get(content, params={"path": "/world/level.dat"}, headers=alice).content == b"v1"
    instance(client, alice, iid, "running")  # it was running, so it runs again
    listing = client.get(f"/api/instances/{iid}/files", params={"path": "/world"}, headers=alice).json()
    assert listing["entries"] == [{"name": "level.dat", "type": "file", "size": 2}]
    assert_problem(client.get(content, params={"path": "/../../etc/passwd"}, headers=alice), 400, "bad_path")
    assert_problem(client.get(content, params={"path": "/missing"}, headers=alice), 404, "not_found")
    unknown = "00000000-0000-0000-0000-000000000000"
    assert_problem(client.post(f"/api/instances/{iid}/backups/{unknown}/restore", headers=alice), 404, "not_found")


def test_write_limit_is_413(client: TestClient, new_user: Callable) -> None:
    alice = new_user("alice@example.com")
    iid = running_instance(client, alice)
    big = b"x" * (8 * 1024 * 1024 + 1)
    assert_problem(client.put(f"/api/instances/{iid}/files/content", params={"path": "/big"}, content=big,
                              headers=alice), 413, "too_large")


def test_another_customer_gets_404_everywhere(client: TestClient, new_user: Callable) -> None:
    alice, bob = new_user("alice@example.com"), new_user("bob@example.com")
    iid = running_instance(client, alice)
    base = f"/api/instances/{iid}"
    for method, url, kwargs in [
        ("get", base, {}), ("post", f"{base}/power", {"json": {"action": "stop"}}), ("delete", base, {}),
        ("get", f"{base}/files", {}), ("get", f"{base}/files/content", {"params": {"path": "/x"}}),
        ("put", f"{base}/files/content", {"params": {"path": "/x"}, "content": b"no"}),
        ("post", f"{base}/backups", {}), ("get", f"{base}/backups", {}),
        ("post", f"{base}/backups/00000000-0000-0000-0000-000000000000/restore", {}),
    ]:
        assert_problem(getattr(client, method)(url, headers=bob, **kwargs), 404, "not_found")
    assert client.get(base, headers=alice).json()["status"] == "running"
