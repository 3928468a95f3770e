"""Offsite backups end to end: a real `zlh serve` with `ZLH_BACKUP_S3_*` pointing at a real S3 API (moto's
server), and a real `zlh agent` process that has no S3 setting at all (it is deployed alone): the agent uploads
the real server's archive over the URLs it is handed, and restores only what matches the recorded SHA-256."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import Agent, Server
from tests.e2e.test_lifecycle_smoke import finish, settled
from tests.e2e.test_provisioning import new_customer
from tests.s3 import Bucket


def test_a_real_server_backed_up_to_s3_by_an_agent_without_credentials(
            serve: Callable[..., Server], agent: Agent, s3_bucket: Bucket, tmp_path: Path) -> None:
    settings = {f"ZLH_{k.upper()}": str(v) for k, v in s3_bucket.settings(backup_s3_part_size="5MiB").items()}
    server = serve(ZLH_AGENT_URL=agent.url, ZLH_AGENT_SECRET=agent.secret, **settings)
    with new_customer(server, "alice@example.com") as alice:
        created = alice.post("/api/instances", json={"kind": "game", "name": "offsite", "template": "minecraft"},
                             headers={"Idempotency-Key": "offsite"})
        assert finish(alice, created)["phase"] == "succeeded"
        iid = created.json()["instance_id"]
        settled(alice, iid, "running")
        content = f"/api/instances/{iid}/files/content"
        assert alice.put(content, params={"path": "/notes.txt"}, content=b"original").status_code == 204
        big = os.urandom(6 * 1024 * 1024)  # does not compress: the archive goes up in two parts
        assert alice.put(content, params={"path": "/world/region.mca"}, content=big).status_code == 204

        backup = alice.post(f"/api/instances/{iid}/backups")
        assert finish(alice, backup)["phase"] == "succeeded"
        backup_id = backup.json()["backup_id"]
        key = f"zlh/backups/{iid}/{backup_id}.tar.gz"
        assert s3_bucket.object_keys() == [key] and s3_bucket.parts(key) == 2
        assert not (tmp_path / "data" / "backups" / f"{backup_id}.tar.gz").exists()  # not kept on the node
        assert alice.get("/api/backups").json()["items"][0]["location"] == "s3"

        alice.put(content, params={"path": "/notes.txt"}, content=b"changed")
        restore = alice.post(f"/api/instances/{iid}/backups/{backup_id}/restore")
        assert finish(alice, restore)["phase"] == "succeeded"
        assert alice.get(content, params={"path": "/notes.txt"}).content == b"original"
        settled(alice, iid, "running")

        s3_bucket.tamper(key)
        alice.put(content, params={"path": "/notes.txt"}, content=b"after the restore")
        restore = alice.post(f"/api/instances/{iid}/backups/{backup_id}/restore")
        failed = finish(alice, restore)
        assert failed["phase"] == "failed" and failed["error"]["code"] == "checksum_mismatch", failed
        assert "untouched" in failed["error"]["message"]
        assert alice.get(content, params={"path": "/notes.txt"}).content == b"after the restore"

        deleted = alice.delete(f"/api/backups/{backup_id}")
        assert finish(alice, deleted)["phase"] == "succeeded"
        assert s3_bucket.object_keys() == []
    agent_env = Path(f"/proc/{agent.proc.pid}/environ").read_bytes()
    assert b"ZLH_BACKUP_S3" not in agent_env and s3_bucket.name.encode() not in agent_env  # it never had them
