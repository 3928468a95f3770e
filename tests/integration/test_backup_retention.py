"""Retention per server, on local disk (the embedded default): the operator's default (`ZLH_BACKUP_RETENTION`),
a server's own setting through the API, the oldest automatic backups pruned after each backup and the pruning
recorded; a person's backups never pruned. (On S3: tests/integration/test_offsite_backups.py.)"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from domain.backup_policy import policy_id
from services.adapters.fake_driver import FakeDriver
from services.bootstrap import Container
from tests.integration.conftest import ADMIN_TOKEN, auth, poll
from tests.integration.test_api import assert_problem, make_customer
from tests.integration.test_backups import backup, running_instance
from tests.integration.test_offsite_backups import automatic_backup

ADMIN = auth(ADMIN_TOKEN)


@pytest.fixture
def container(make_container: Any) -> Container:
    return make_container(backup_retention=3)


def ids(client: TestClient, headers: dict[str, str], iid: str, expected: set[str]) -> set[str]:
    return poll(lambda: {b["id"] for b in client.get(f"/api/instances/{iid}/backups", headers=headers).json()["items"]},
                lambda found: found == expected)


def test_a_server_keeps_its_own_number_of_automatic_backups(client: TestClient, container: Container,
                                                           driver: FakeDriver) -> None:
    alice, bob = make_customer(client, "alice@example.com"), make_customer(client, "bob@example.com")
    iid = running_instance(client, alice)
    url = f"/api/instances/{iid}/backups/retention"
    assert client.get(url, headers=alice).json() == {"keep": None, "default": 3, "effective": 3}
    assert_problem(client.get(url, headers=bob), 404, "not_found")
    assert_problem(client.put(url, json={"keep": 1}, headers=bob), 404, "not_found")
    assert_problem(client.put(url, json={"keep": 0}, headers=alice), 422, "validation_error")
    assert_problem(client.put(url, json={"keep": "two"}, headers=alice), 422, "validation_error")
    assert_problem(client.put(url, json={"keep": 2, "extra": 1}, headers=alice), 422, "validation_error")
    assert client.put(url, json={"keep": 2}, headers=alice).json() == {"keep": 2, "default": 3, "effective": 2}
    assert client.put(url, json={"keep": 2}, headers=alice).status_code == 200  # the same again: nothing new
    assert client.get(url, headers=ADMIN).json()["effective"] == 2

    manual = backup(client, alice, iid)
    made = [automatic_backup(client, container, alice, iid) for _ in range(3)]
    ids(client, alice, iid, {manual, made[1], made[2]})
    assert UUID(made[0]) not in driver.backups and ("delete_backup", UUID(made[0])) in driver.calls
    assert UUID(manual) in driver.backups

    events = client.get(f"/api/admin/streams/{made[0]}/events", headers=ADMIN).json()["events"]
    assert events[-1]["type"].endswith("Pruned") and "newest 2" in events[-1]["data"]["reason"]
    me = client.get("/api/me", headers=alice).json()
    changes = client.get(f"/api/admin/streams/{policy_id(UUID(iid))}/events", headers=ADMIN).json()["events"]
    assert [(e["type"].rsplit(".", 1)[-1], e["data"].get("keep")) for e in changes] == [("Created", None),
                                                                                       ("RetentionSet", 2)]
    assert changes[-1]["data"]["actor_id"] == me["id"]

    activity = client.get(f"/api/instances/{iid}/activity", headers=alice).json()["items"]
    assert [a["detail"].get("pruned") for a in activity if a["action"] == "backup.create"][:3] == [
        [made[0]], None, None]  # the newest backup's pruned the oldest automatic one

    # Back to the operator's default: three kept.
    assert client.put(url, json={"keep": None}, headers=alice).json() == {"keep": None, "default": 3, "effective": 3}
    made.append(automatic_backup(client, container, alice, iid))
    ids(client, alice, iid, {manual, made[1], made[2], made[3]})
    made.append(automatic_backup(client, container, alice, iid))
    ids(client, alice, iid, {manual, made[2], made[3], made[4]})
