"""Where a backup is, its pruning, and a server's retention policy: the rules, on the aggregates alone."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.backup import Backup
from domain.backup_policy import BackupPolicy, RetentionInvalidError, policy_id
from domain.errors import IllegalTransitionError


def made() -> Backup:
    return Backup(instance_id=uuid4(), owner_id=uuid4(), operation_id=uuid4())


def test_a_backup_is_local_until_stored_offsite_once() -> None:
    backup = made()
    assert backup.location == "local" and backup.key is None
    backup.complete(10, "a" * 64, "2026-12-01T00:00:00Z", "s3://b/zlh/backups/i/b.tar.gz")
    backup.store_offsite("s3", "backups/i/b.tar.gz", 2)
    assert (backup.location, backup.key) == ("s3", "backups/i/b.tar.gz")
    with pytest.raises(IllegalTransitionError):
        backup.store_offsite("s3", "elsewhere", 1)
    replayed = None
    for recorded in backup.collect_events():  # replaying the stream rebuilds the same state
        replayed = recorded.mutate(replayed)
    assert replayed is not None and replayed.location == "s3" and replayed.status == "completed"


def test_only_completed_backups_are_pruned() -> None:
    pending = made()
    with pytest.raises(IllegalTransitionError):
        pending.prune(uuid4(), "retention")
    backup = made()
    backup.complete(10, "a" * 64, "2026-12-01T00:00:00Z", "/p")
    backup.prune(uuid4(), "retention: the newest 2 automatic backups are kept")
    assert backup.status == "deleted"
    with pytest.raises(IllegalTransitionError):
        backup.prune(uuid4(), "again")


def test_a_servers_retention_is_between_1_and_1000_or_the_default() -> None:
    instance_id, actor = uuid4(), uuid4()
    policy = BackupPolicy(instance_id=instance_id)
    assert policy.id == policy_id(instance_id) and policy.keep is None
    for bad in (0, -1, 1001):
        with pytest.raises(RetentionInvalidError):
            policy.set_retention(bad, actor)
    policy.set_retention(5, actor)
    policy.set_retention(5, actor)  # the same again records nothing
    policy.set_retention(None, actor)
    assert [type(e).__name__ for e in policy.collect_events()] == ["Created", "RetentionSet", "RetentionSet"]
    assert policy.keep is None
