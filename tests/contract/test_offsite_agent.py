"""The real node agent moves backups to and from S3 (moto's server) over presigned URLs: it uploads its archive
in parts, restores only an object whose SHA-256 is the recorded one (a tampered one fails, the files untouched,
nothing left behind), and its errors never show a URL. The agent is given no storage credentials at all."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from services.adapters.agent_client import AgentDriver
from services.adapters.s3_objects import S3ObjectStore
from services.agent.driver import LocalDriver
from services.agent.server import start_agent_in_thread
from services.ports import DriverError
from services.workers.provisioning import backup_key
from tests.contract.test_driver_contract import make_spec
from tests.s3 import ACCESS_KEY, REGION, SECRET_KEY, Bucket

pytestmark = pytest.mark.real_services  # a node agent over HTTP and an S3 server

MiB = 1024 * 1024


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[LocalDriver, AgentDriver]]:
    local = LocalDriver(tmp_path / "node")
    secret = secrets.token_urlsafe(32)
    url, stop = start_agent_in_thread(local, secret)
    agent = AgentDriver(url, secret)
    try:
        yield local, agent
    finally:
        agent.close()
        stop()
        local.kill_all()


@pytest.fixture
def s3(s3_bucket: Bucket) -> S3ObjectStore:
    return S3ObjectStore(s3_bucket.name, endpoint_url=s3_bucket.endpoint, region=REGION, access_key=ACCESS_KEY,
                         secret_key=SECRET_KEY, prefix="zlh", part_size=5 * MiB)


def test_the_agent_uploads_in_parts_and_restores_only_what_it_made(
        node: tuple[LocalDriver, AgentDriver], s3: S3ObjectStore, s3_bucket: Bucket) -> None:
    local, agent = node
    spec = make_spec()
    agent.create_directory(spec)
    world = os.urandom(6 * MiB)  # does not compress: a two-part archive
    for i in range(2):
        local.write_file(spec, f"world/region-{i}.mca", world[i * 3 * MiB:(i + 1) * 3 * MiB])
    agent.write_file(spec, "server.properties", b"motd=before\n")
    backup_id = uuid4()
    manifest = agent.create_backup(spec, backup_id)
    key = backup_key(spec.instance_id, backup_id)

    upload = s3.begin_upload(key, manifest["size"], manifest["sha256"])
    etags = agent.upload_backup(backup_id, upload.parts, upload.part_size)
    assert [e["number"] for e in etags] == [1, 2]
    assert s3.complete_upload(upload, etags, manifest["size"]) == 2
    assert s3_bucket.parts(f"zlh/{key}") == 2
    agent.delete_backup(backup_id)
    assert not (local.backups_dir / f"{backup_id}.tar.gz").exists()

    agent.write_file(spec, "server.properties", b"motd=griefed\n")
    agent.write_file(spec, "new.txt", b"added later")
    agent.restore_offsite_backup(spec, backup_id, manifest["sha256"], s3.download_url(key))
    assert agent.read_file(spec, "server.properties") == b"motd=before\n"
    assert agent.read_file(spec, "world/region-1.mca") == world[3 * MiB:]
    with pytest.raises(DriverError):
        agent.read_file(spec, "new.txt")
    assert [p.name for p in local.backups_dir.iterdir() if not p.name.startswith(".lock")] == []

    # A changed object is refused before anything is touched, and the download does not stay on the node.
    s3_bucket.tamper(f"zlh/{key}")
    agent.write_file(spec, "server.properties", b"motd=after\n")
    with pytest.raises(DriverError) as info:
        agent.restore_offsite_backup(spec, backup_id, manifest["sha256"], s3.download_url(key))
    assert info.value.code == "checksum_mismatch"
    assert "does not match the SHA-256 recorded when it was made" in info.value.message
    assert "untouched" in info.value.message and "Signature" not in info.value.message
    assert agent.read_file(spec, "server.properties") == b"motd=after\n"
    assert [p.name for p in local.backups_dir.iterdir() if not p.name.startswith(".lock")] == []
    assert sorted(p.name for p in local.instances_dir.parent.glob("instances/*")) == [str(spec.instance_id)]


def test_the_agent_refuses_what_it_cannot_do_and_shows_no_url(node: tuple[LocalDriver, AgentDriver],
                                                              s3: S3ObjectStore) -> None:
    _, agent = node
    spec = make_spec()
    agent.create_directory(spec)
    agent.write_file(spec, "a.txt", b"a")
    upload = s3.begin_upload("backups/x.tar.gz", 10, "0" * 64)
    with pytest.raises(DriverError) as info:
        agent.upload_backup(uuid4(), upload.parts, upload.part_size)
    assert info.value.code == "not_found"

    backup_id = uuid4()
    manifest = agent.create_backup(spec, backup_id)
    with pytest.raises(DriverError) as info:
        agent.upload_backup(backup_id, [{"number": 1, "url": "file:///etc/passwd"}], 5 * MiB)
    assert info.value.code == "validation_error"

    s3.abort_upload(upload)  # the upload is gone: storage refuses the part
    with pytest.raises(DriverError) as info:
        agent.upload_backup(backup_id, upload.parts, upload.part_size)
    assert info.value.code == "offsite_failed"
    assert info.value.message == "the node could not move the backup to or from offsite storage"

    with pytest.raises(DriverError) as info:
        agent.restore_offsite_backup(spec, backup_id, manifest["sha256"], s3.download_url("backups/none.tar.gz"))
    assert info.value.code == "not_found" and "Signature" not in info.value.message
    assert agent.read_file(spec, "a.txt") == b"a"
