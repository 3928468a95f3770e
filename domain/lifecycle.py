"""The instance status machine: which status follows which, as a pure table."""

from __future__ import annotations

from enum import StrEnum

from domain.errors import IllegalTransitionError


class InstanceKind(StrEnum):
    GAME = "game"
    DEV = "dev"


class InstanceStatus(StrEnum):
    PROVISIONING = "provisioning"
    RUNNING = "running"
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


S = InstanceStatus

#: provisioning -> running <-> stopped -> deleting -> deleted, and failed from any working state.
TRANSITIONS: dict[InstanceStatus, frozenset[InstanceStatus]] = {
    S.PROVISIONING: frozenset({S.RUNNING, S.FAILED}),
    S.RUNNING: frozenset({S.STOPPED, S.DELETING, S.FAILED, S.SUSPENDED}),
    S.STOPPED: frozenset({S.RUNNING, S.DELETING, S.FAILED, S.SUSPENDED}),
    S.SUSPENDED: frozenset({S.RUNNING, S.STOPPED, S.DELETING}),
    S.FAILED: frozenset({S.DELETING}),
    S.DELETING: frozenset({S.DELETED, S.FAILED}),
    S.DELETED: frozenset(),
}


def check_transition(current: InstanceStatus, target: InstanceStatus) -> None:
    """Raise `IllegalTransitionError` unless `current -> target` is an edge of the machine."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransitionError(f"an instance cannot go from {current} to {target}")


def is_live(status: InstanceStatus) -> bool:
    """A live instance holds its name; only `deleted` releases it."""
    return status is not InstanceStatus.DELETED
