"""The `Subuser` membership's rules and the instance's rename rule, on the aggregates alone."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.errors import IllegalTransitionError, OperationInProgressError
from domain.instance import Instance
from domain.subuser import (
    PERMISSIONS,
    Subuser,
    SubuserExistsError,
    SubuserNotFoundError,
    SubuserRuleError,
    check_permissions,
    subuser_id,
)


def test_permissions_are_known_once_each_in_a_fixed_order() -> None:
    assert check_permissions(["power", "console", "power"]) == ["console", "power"]
    assert check_permissions([]) == []
    assert check_permissions(reversed(PERMISSIONS)) == list(PERMISSIONS)
    with pytest.raises(SubuserRuleError, match="'root'"):
        check_permissions(["console", "root"])


def test_a_membership_is_added_changed_removed_and_added_again() -> None:
    instance, owner, user, actor = uuid4(), uuid4(), uuid4(), uuid4()
    member = Subuser.add(instance, owner, user, "b@example.com", ["power"], actor)
    assert member.id == subuser_id(instance, user) and member.active and member.permissions == ["power"]
    with pytest.raises(SubuserExistsError):
        member.readd(["console"], actor)
    assert member.change_permissions(["power"], actor) is False  # the same: nothing recorded
    assert member.change_permissions(["console", "power"], actor) is True
    member.remove(actor)
    assert not member.active and member.permissions == []
    with pytest.raises(SubuserNotFoundError):
        member.change_permissions(["console"], actor)
    with pytest.raises(SubuserNotFoundError):
        member.remove(actor)
    member.readd(["files.read"], actor)
    assert member.active and member.permissions == ["files.read"]
    events = member.collect_events()
    assert [type(e).__name__ for e in events] == ["Added", "PermissionsChanged", "Removed", "Readded"]
    assert all(e.actor_id == actor and e.instance_id == instance and e.user_id == user for e in events)


def test_the_owner_cannot_be_their_own_subuser() -> None:
    owner = uuid4()
    with pytest.raises(SubuserRuleError):
        Subuser.add(uuid4(), owner, owner, "o@example.com", [], owner)


def test_rename_needs_no_pending_operation_and_a_live_instance() -> None:
    op = uuid4()
    instance = Instance(owner_id=uuid4(), kind="game", name="a", template="minecraft", edge_name="a-1",
                        operation_id=op)
    with pytest.raises(OperationInProgressError):
        instance.rename("b", uuid4())
    instance.provision(op, 25565, "127.0.0.1:25565")
    assert instance.rename("a", uuid4()) is False
    assert instance.rename("b", uuid4()) is True and instance.name == "b" and instance.edge_name == "a-1"
    instance.begin_deletion(uuid4(), keep_backups=True)
    with pytest.raises(IllegalTransitionError):
        instance.rename("c", uuid4())
