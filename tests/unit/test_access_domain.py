"""Tokens, users, quotas and backup deletion as domain rules, with no I/O; legacy token events still decode."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import pytest
from eventsourcing.application import Application

from domain.backup import Backup
from domain.errors import DomainError, IllegalTransitionError, OperationInProgressError
from domain.ids import credential_id
from domain.instance import Instance
from domain.lifecycle import InstanceStatus, check_operation_allowed
from domain.quota import BACKUPS, INSTANCES, TICKETS, Quota, QuotaExceededError
from domain.user import LEGACY_TOKEN_NAME, CannotDisableSelfError, Credential, User

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def issue(user: User, name: str = "laptop", scope: str = "full", expires_at: datetime | None = None) -> Credential:
    return Credential.issue(uuid4().hex, user.id, name, scope, expires_at, NOW)


def test_a_token_has_a_name_a_scope_and_an_optional_future_expiry() -> None:
    user = User(email="a@example.com", admin=False)
    token = issue(user, "ci", "read", NOW + timedelta(days=30))
    assert (token.name, token.scope, token.expires_at) == ("ci", "read", NOW + timedelta(days=30))
    assert token.is_valid(NOW) and not token.is_valid(NOW + timedelta(days=30))
    bad = [("", "full", None), ("a\x00b", "full", None), ("bell\x07", "full", None), ("\ud800", "full", None),
           ("x" * 101, "full", None), ("ok", "admin", None), ("ok", "full", NOW - timedelta(seconds=1)),
           ("ok", "full", NOW), ("ok", "full", datetime(2026, 4, 1)),  # no timezone
           ("ok", "full", NOW + timedelta(days=3661)),
           ("ok", "full", datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))))]
    for name, scope, expires in bad:
        with pytest.raises(DomainError) as caught:
            issue(user, name, scope, expires)
        assert caught.value.code == "validation_error"


def test_revocation_is_final_and_idempotent() -> None:
    user = User(email="a@example.com", admin=False)
    token = issue(user)
    assert token.revoke("owner", user.id) is True
    assert token.revoke("owner", user.id) is False
    assert not token.is_valid(NOW) and len(token.collect_events()) == 2


def test_disable_and_enable_are_idempotent_and_nobody_disables_themselves() -> None:
    operator, user = User(email="op@example.com", admin=True), User(email="a@example.com", admin=False)
    assert user.disable(operator.id) and not user.disable(operator.id) and user.disabled
    assert user.enable(operator.id) and not user.enable(operator.id) and not user.disabled
    with pytest.raises(CannotDisableSelfError):
        operator.disable(operator.id)


def test_a_new_bootstrap_token_revokes_the_previous_and_legacy_ones_only() -> None:
    admin = User(email="admin@zlh.localhost", admin=True)
    admin._token_issued(token_hash="legacy")  # an old log: the admin's token recorded on the user
    legacy = Credential(token_hash="legacy", user_id=admin.id, name=LEGACY_TOKEN_NAME, scope="full", expires_at=None)
    first = issue(admin, "ZLH_BOOTSTRAP_ADMIN_TOKEN")
    assert admin.bootstrap_credential_ids == [credential_id("legacy")]
    assert admin.set_bootstrap_token(first, [legacy]) == [legacy] and legacy.revoked
    own = issue(admin, "my own token")  # not a bootstrap token: rotation leaves it alone
    second = issue(admin, "ZLH_BOOTSTRAP_ADMIN_TOKEN")
    assert set(admin.bootstrap_credential_ids) == {credential_id("legacy"), first.id}
    assert admin.set_bootstrap_token(second, [legacy, first]) == [first]
    assert first.revoked and not second.revoked and not own.revoked
    assert admin.bootstrap_credential_id == second.id
    with pytest.raises(DomainError):
        admin.set_bootstrap_token(issue(User(email="b@example.com", admin=False)), [])


def test_legacy_token_events_decode_as_full_tokens_without_expiry() -> None:
    """An `Issued` stored before names and scopes existed (class version 1) still decodes."""
    app = Application[object](env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    user = User(email="old@example.com", admin=False)
    token = Credential(token_hash="h", user_id=user.id, name="x", scope="read", expires_at=None)
    app.save(user, token)
    stored = next(e for e in app.recorder.select_events(token.id))
    state = json.loads(stored.state)
    for field in ("name", "scope", "expires_at", "class_version"):
        state.pop(field)
    legacy = type(stored)(originator_id=stored.originator_id, originator_version=stored.originator_version,
                          topic=stored.topic, state=json.dumps(state).encode())
    decoded = app.mapper.to_domain_event(legacy)
    assert (decoded.name, decoded.scope, decoded.expires_at) == (LEGACY_TOKEN_NAME, "full", None)
    assert decoded.user_id == user.id


def test_quota_holds_at_most_its_limit_and_frees_slots() -> None:
    quota = Quota(kind=INSTANCES, subject="owner", held=[])
    slots = [uuid4() for _ in range(3)]
    for slot in slots[:2]:
        quota.take(slot, 2)
    quota.take(slots[0], 2)  # already held: no new slot, no error
    with pytest.raises(QuotaExceededError) as caught:
        quota.take(slots[2], 2)
    assert caught.value.code == "quota_exceeded" and caught.value.extra == {"quota": INSTANCES, "limit": 2}
    assert quota.release(slots[0]) and not quota.release(slots[0])
    quota.take(slots[2], 2)
    quota.take(uuid4(), None)  # no limit
    assert len(quota.held) == 3


def test_a_quota_opened_late_counts_what_existed_and_each_kind_says_what_to_do() -> None:
    existing = [uuid4() for _ in range(10)]
    with pytest.raises(QuotaExceededError, match="delete one"):
        Quota(kind=BACKUPS, subject="instance", held=existing).take(uuid4(), 10)
    with pytest.raises(QuotaExceededError, match="tomorrow"):
        Quota(kind=TICKETS, subject="owner/2026-03-01", held=existing).check_room(10)
    assert Quota.create_id(TICKETS, "a/2026-03-01") != Quota.create_id(TICKETS, "a/2026-03-02")


def test_backup_deletion() -> None:
    backup = Backup(instance_id=uuid4(), owner_id=uuid4(), operation_id=uuid4())
    with pytest.raises(OperationInProgressError):
        backup.request_deletion(uuid4())  # still being made
    backup.complete(10, "sha", "2026-03-01T00:00:00Z", "/b")
    first = uuid4()
    backup.request_deletion(first)
    assert backup.status == "deleting"
    with pytest.raises(IllegalTransitionError):
        backup.check_restorable()
    backup.deletion_failed(first, "agent_timeout")
    assert backup.status == "completed" and backup.deletion_operation_id is None
    second = uuid4()
    backup.request_deletion(second)
    backup.request_deletion(third := uuid4())  # an interrupted deletion can be asked again
    backup.deletion_failed(second, "late")  # not the current deletion: no effect
    assert backup.status == "deleting" and backup.deletion_operation_id == third
    backup.delete(third)
    assert backup.status == "deleted"
    with pytest.raises(IllegalTransitionError):
        backup.request_deletion(uuid4())


def test_a_failed_backup_deleted_goes_back_to_failed_if_the_deletion_fails() -> None:
    backup = Backup(instance_id=uuid4(), owner_id=uuid4(), operation_id=uuid4())
    backup.fail("agent_error", "no")
    op = uuid4()
    backup.request_deletion(op)
    backup.deletion_failed(op, "agent_timeout")
    assert backup.status == "failed"


def test_deleting_a_backup_is_an_operation_allowed_in_every_instance_status() -> None:
    for status in InstanceStatus:
        check_operation_allowed("delete_backup", status)
    instance = Instance(owner_id=uuid4(), kind="game", name="a", template="minecraft", edge_name="a-1",
                        operation_id=uuid4())
    with pytest.raises(OperationInProgressError):  # the create is still pending: one operation at a time
        instance.begin_operation(uuid4(), "delete_backup")
