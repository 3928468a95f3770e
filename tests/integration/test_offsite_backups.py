"""Offsite backups against a real S3 API (moto's server mode), on SQLite and PostgreSQL: the archive goes up in
parts from the node, the restore checks its SHA-256 (a tampered object fails it and leaves the files alone),
retention prunes the oldest automatic backups (recorded as events), deleting a backup or its server deletes the
objects, and support attachments live in the same bucket.

The driver is the fake, but its uploads and downloads are the agent's own code over real HTTP to the presigned
URLs (tests/contract/test_offsite_agent.py runs the real agent).
"""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from domain.backup import Backup
from services.adapters.fake_driver import FakeDriver
from services.bootstrap import Container
from services.lifecycle import request_backup
from tests.integration.conftest import ADMIN_TOKEN, auth, poll
from tests.integration.test_api import assert_problem, make_customer, wait_operation
from tests.integration.test_backups import backup, running_instance
from tests.integration.test_support_desk import open_ticket, upload
from tests.s3 import Bucket

MiB = 1024 * 1024
ADMIN = auth(ADMIN_TOKEN)


@pytest.fixture
def container(make_container: Any, s3_bucket: Bucket) -> Container:
    return make_container(**s3_bucket.settings(backup_s3_part_size="5MiB", backup_retention=2,
                                               attachments_store="s3"))


def key_of(instance_id: str, backup_id: str) -> str:
    return f"zlh/backups/{instance_id}/{backup_id}.tar.gz"


def restore(client: TestClient, headers: dict[str, str], instance_id: str, backup_id: str) -> dict:
    r = client.post(f"/api/instances/{instance_id}/backups/{backup_id}/restore", headers=headers)
    assert r.status_code == 202, r.text
    return wait_operation(client, headers, r.json()["operation_id"])


def test_backups_go_up_in_parts_and_come_back_verified(client: TestClient, driver: FakeDriver,
                                                       s3_bucket: Bucket) -> None:
    alice = make_customer(client, "alice@example.com")
    iid = running_instance(client, alice)
    files = driver.files[UUID(iid)]
    files["world/region.mca"] = region = os.urandom(7 * MiB)  # 9+ MiB archive: two 5 MiB parts
    files["world/level.dat"] = b"original level"

    bid = backup(client, alice, iid)
    key = key_of(iid, bid)
    assert s3_bucket.object_keys() == [key] and s3_bucket.parts(key) == 2
    assert UUID(bid) not in driver.backups  # the node's copy is gone: the offsite one is the backup
    listed = poll(lambda: client.get(f"/api/instances/{iid}/backups", headers=alice).json()["items"],
                  lambda items: items and items[0]["status"] == "completed")
    assert listed[0]["location"] == "s3" and listed[0]["size"] == len(s3_bucket.read(key))
    assert client.get("/api/backups", headers=alice).json()["items"][0]["location"] == "s3"

    files["world/level.dat"] = b"griefed"
    files["new.txt"] = b"added later"
    op = restore(client, alice, iid, bid)
    assert op["phase"] == "succeeded", op
    restored = driver.files[UUID(iid)]
    assert restored["world/level.dat"] == b"original level" and restored["world/region.mca"] == region
    assert "new.txt" not in restored
    assert ("restore_offsite_backup", UUID(iid)) in driver.calls

    # Someone changes the object in the bucket: the restore refuses it and the files stay as they are.
    s3_bucket.tamper(key)
    driver.files[UUID(iid)]["world/level.dat"] = b"after the restore"
    op = restore(client, alice, iid, bid)
    assert op["phase"] == "failed" and op["error"]["code"] == "checksum_mismatch", op
    assert "does not match the SHA-256 recorded when it was made" in op["error"]["message"]
    assert "untouched" in op["error"]["message"] and "Signature" not in op["error"]["message"]
    assert driver.files[UUID(iid)]["world/level.dat"] == b"after the restore"

    r = client.delete(f"/api/backups/{bid}", headers=alice)
    assert r.status_code == 202, r.text
    assert wait_operation(client, alice, r.json()["operation_id"])["phase"] == "succeeded"
    assert s3_bucket.object_keys("zlh/backups/") == []
    poll(lambda: client.get("/api/backups", headers=alice).json()["items"], lambda items: items == [])


def test_no_url_with_a_signature_is_ever_recorded(client: TestClient, container: Container) -> None:
    alice = make_customer(client, "alice@example.com")
    iid = running_instance(client, alice)
    bid = backup(client, alice, iid)
    restored = restore(client, alice, iid, bid)
    assert restored["phase"] == "succeeded"
    made_by = container.app.repository.get(UUID(bid)).operation_id
    recorded = ""
    for stream in (made_by, restored["id"], bid, iid):
        recorded += repr(client.get(f"/api/admin/streams/{stream}/events", headers=ADMIN).json()["events"])
    assert "upload_backup" in recorded and "upload_id" in recorded
    assert "Signature" not in recorded and "X-Amz" not in recorded


def automatic_backup(client: TestClient, container: Container, headers: dict[str, str], iid: str) -> str:
    """A backup as a schedule makes it (origin `schedule_run:…`)."""
    me = client.get("/api/me", headers=headers).json()
    queued = request_backup(container.app, UUID(me["id"]), UUID(iid), None, container.quotas,
                            origin="schedule_run:nightly")
    container.wait_for_projections(queued.position, ("operations",))
    op = wait_operation(client, headers, str(queued.operation_id))
    assert op["phase"] == "succeeded", op
    return str(queued.backup_id)


def test_retention_prunes_the_oldest_automatic_backups(client: TestClient, container: Container,
                                                       s3_bucket: Bucket) -> None:
    alice = make_customer(client, "alice@example.com")
    iid = running_instance(client, alice)
    manual = backup(client, alice, iid)
    first, second = automatic_backup(client, container, alice, iid), automatic_backup(client, container, alice, iid)
    assert len(s3_bucket.object_keys("zlh/backups/")) == 3  # within the retention of 2 automatic ones

    third = automatic_backup(client, container, alice, iid)
    assert s3_bucket.object_keys("zlh/backups/") == sorted(key_of(iid, b) for b in (manual, second, third))
    pruned: Backup = container.app.repository.get(UUID(first))
    assert pruned.status == "deleted"
    events = client.get(f"/api/admin/streams/{first}/events", headers=ADMIN).json()["events"]
    assert events[-1]["type"].endswith("Pruned") and "retention" in events[-1]["data"]["reason"]
    op = container.app.repository.get(pruned.operation_id)  # the operation that made it...
    third_op = container.app.repository.get(container.app.repository.get(UUID(third)).operation_id)
    assert op.id != third_op.id and third_op.result["pruned"] == [first]  # ...and the one that pruned it
    assert [s["name"] for s in third_op.steps][-2:] == ["upload_backup", "prune_backups"]
    listed = poll(lambda: client.get(f"/api/instances/{iid}/backups", headers=alice).json()["items"],
                  lambda items: first not in {b["id"] for b in items})
    assert {b["id"] for b in listed} == {manual, second, third}

    # A person's backups are never pruned, however many automatic ones follow.
    automatic_backup(client, container, alice, iid)
    assert key_of(iid, manual) in s3_bucket.object_keys() and key_of(iid, second) not in s3_bucket.object_keys()


def test_deleting_a_server_with_its_backups_deletes_the_objects(client: TestClient, s3_bucket: Bucket) -> None:
    alice = make_customer(client, "alice@example.com")
    iid = running_instance(client, alice)
    backup(client, alice, iid)
    backup(client, alice, iid)
    assert len(s3_bucket.object_keys("zlh/backups/")) == 2
    r = client.delete(f"/api/instances/{iid}", params={"keep_backups": "false"}, headers=alice)
    assert r.status_code == 202, r.text
    assert wait_operation(client, alice, r.json()["operation_id"])["phase"] == "succeeded"
    assert s3_bucket.object_keys("zlh/backups/") == []


def test_support_attachments_live_in_the_bucket(client: TestClient, s3_bucket: Bucket) -> None:
    alice = make_customer(client, "alice@example.com")
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(1000)
    shot = upload(client, alice, "screen.png", data)
    sha = shot["sha256"]
    assert s3_bucket.object_keys("zlh/attachments/") == [f"zlh/attachments/{sha[:2]}/{sha}"]
    ticket = open_ticket(client, alice, attachments=[shot["id"]])
    got = client.get(f"/api/support/tickets/{ticket['id']}/attachments/{sha}", headers=alice)
    assert got.status_code == 200 and got.content == data
    s3_bucket.client.delete_object(Bucket=s3_bucket.name, Key=f"zlh/attachments/{sha[:2]}/{sha}")
    assert_problem(client.get(f"/api/support/tickets/{ticket['id']}/attachments/{sha}", headers=alice), 404,
                   "not_found")


def test_a_failed_upload_fails_the_backup_and_leaves_no_object(client: TestClient, driver: FakeDriver,
                                                              container: Container, s3_bucket: Bucket) -> None:
    from services.ports import DriverError

    alice = make_customer(client, "alice@example.com")
    iid = running_instance(client, alice)
    driver.fail_on["upload_backup"] = DriverError("offsite_failed", "offsite storage refused part 1 (HTTP 403)")
    r = client.post(f"/api/instances/{iid}/backups", headers=alice)
    assert r.status_code == 202, r.text
    op = wait_operation(client, alice, r.json()["operation_id"])
    assert op["phase"] == "failed" and op["error"]["code"] == "offsite_failed", op
    assert s3_bucket.object_keys() == []
    uploads = s3_bucket.client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", [])
    assert uploads == []  # aborted, so no parts are left to pay for
    failed: Backup = container.app.repository.get(UUID(r.json()["backup_id"]))
    assert failed.status == "failed" and failed.location == "local"

    # The node's copy is still there: deleting the failed backup removes it through the node.
    del driver.fail_on["upload_backup"]
    deleted = client.delete(f"/api/backups/{failed.id}", headers=alice)
    assert wait_operation(client, alice, deleted.json()["operation_id"])["phase"] == "succeeded"
    assert failed.id not in driver.backups
