"""Domain rules, with no I/O: status machine, operation phases, name claims, ids."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from domain.errors import (
    IllegalTransitionError,
    NameTakenError,
    OperationInProgressError,
    OperationNotClaimableError,
)
from domain.ids import instance_id_for_operation, operation_id_for_key
from domain.instance import Instance
from domain.lifecycle import TRANSITIONS, InstanceStatus, check_transition
from domain.name_claim import NameClaim
from domain.operation import Operation, Phase
from domain.user import Credential, User


def new_instance() -> Instance:
    return Instance(owner_id=uuid4(), kind="game", name="a", template="minecraft", edge_name="a-1",
                    operation_id=uuid4())


def new_operation(kind: str = "create") -> Operation:
    return Operation(request_key="k", kind=kind, instance_id=uuid4(), owner_id=uuid4(), fingerprint="f",
                     params={})


def test_ids_are_deterministic_and_scoped() -> None:
    owner, other = uuid4(), uuid4()
    assert operation_id_for_key(owner, "k") == operation_id_for_key(owner, "k")
    assert operation_id_for_key(owner, "k") != operation_id_for_key(other, "k")
    op = Operation(request_key="k", kind="create", instance_id=uuid4(), owner_id=owner, fingerprint="f", params={})
    assert op.id == operation_id_for_key(owner, "k")
    instance = Instance(owner_id=owner, kind="game", name="a", template="minecraft", edge_name="e",
                        operation_id=op.id)
    assert instance.id == instance_id_for_operation(op.id)


def test_status_machine_edges() -> None:
    check_transition(InstanceStatus.PROVISIONING, InstanceStatus.RUNNING)
    check_transition(InstanceStatus.RUNNING, InstanceStatus.STOPPED)
    check_transition(InstanceStatus.STOPPED, InstanceStatus.RUNNING)
    check_transition(InstanceStatus.DELETING, InstanceStatus.DELETED)
    with pytest.raises(IllegalTransitionError):
        check_transition(InstanceStatus.DELETED, InstanceStatus.RUNNING)
    with pytest.raises(IllegalTransitionError):
        check_transition(InstanceStatus.PROVISIONING, InstanceStatus.STOPPED)
    assert TRANSITIONS[InstanceStatus.DELETED] == frozenset()


def test_one_pending_operation_per_instance() -> None:
    instance = new_instance()
    with pytest.raises(OperationInProgressError):
        instance.begin_operation(uuid4(), "start")
    create_op = instance.pending_operation_id
    assert create_op is not None
    instance.provision(create_op, 25565, "127.0.0.1:25565")
    assert instance.status is InstanceStatus.RUNNING and instance.pending_operation_id is None
    second = uuid4()
    instance.begin_operation(second, "stop")
    with pytest.raises(OperationInProgressError):
        instance.begin_operation(uuid4(), "start")
    with pytest.raises(IllegalTransitionError):
        instance.provision(uuid4(), 1, "x")  # not the pending operation


def test_failed_create_leaves_instance_failed() -> None:
    instance = new_instance()
    assert instance.pending_operation_id is not None
    instance.fail_operation(instance.pending_operation_id, "create", "not_connectable")
    assert instance.status is InstanceStatus.FAILED and instance.pending_operation_id is None


def test_operation_phases_and_steps() -> None:
    op = new_operation()
    assert op.phase is Phase.QUEUED
    with pytest.raises(IllegalTransitionError):
        op.start_step("allocate_port", {})
    op.claim("w1")
    with pytest.raises(OperationNotClaimableError):
        op.claim("w2")
    op.start_step("allocate_port", {})
    with pytest.raises(IllegalTransitionError):
        op.start_step("create_directory", {})  # the open step must finish first
    with pytest.raises(IllegalTransitionError):
        op.succeed({})
    op.finish_step("allocate_port", {"port": 30000})
    assert op.steps[-1] == {"name": "allocate_port", "status": "succeeded", "intent": {}, "result": {"port": 30000}}
    op.start_step("start_process", {"port": 30000})
    op.fail("process_exited", "boom")
    assert op.phase is Phase.FAILED and op.error == {"code": "process_exited", "message": "boom"}
    assert op.steps[-1]["status"] == "failed"
    with pytest.raises(IllegalTransitionError):
        op.fail("again", "no")


def test_queued_operation_can_fail_without_steps() -> None:
    op = new_operation()
    op.fail("interrupted", "worker lost")
    assert op.phase is Phase.FAILED and op.steps == []


def test_name_claim_release_and_reclaim() -> None:
    first, second = uuid4(), uuid4()
    claim = NameClaim(owner_id=uuid4(), name="alpha", instance_id=first)
    with pytest.raises(NameTakenError):
        claim.claim(second)
    claim.release(second)  # not the holder: no effect
    assert claim.instance_id == first
    claim.release(first)
    claim.claim(second)
    assert claim.instance_id == second


def test_user_and_credential_ids() -> None:
    user = User(email="a@example.com", admin=False)
    credential = Credential.issue("abc", user.id, "laptop", "full", None, datetime(2026, 1, 1, tzinfo=UTC))
    assert credential.user_id == user.id and credential.id == Credential.create_id("abc")
    assert User.create_id("a@example.com") == user.id

