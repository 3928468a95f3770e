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


#: Which statuses each operation may start from (besides "no other operation pending").
ALLOWED_FROM: dict[str, frozenset[InstanceStatus]] = {
    "start": frozenset({S.STOPPED}),
    "stop": frozenset({S.RUNNING, S.SUSPENDED}),  # suspended: a billing stop that failed can be redone
    "restart": frozenset({S.RUNNING, S.STOPPED}),
    "backup": frozenset({S.RUNNING, S.STOPPED}),
    "restore": frozenset({S.RUNNING, S.STOPPED}),
    "delete": frozenset({S.PROVISIONING, S.RUNNING, S.STOPPED, S.SUSPENDED, S.FAILED, S.DELETING}),
    # A customer's backups stay theirs: deleting one is allowed whatever the server's state, deleted included.
    "delete_backup": frozenset(S),
    # Moving a server to another node (admin): it is stopped, copied and started there.
    "move": frozenset({S.RUNNING, S.STOPPED}),
}

#: What a delete removes, in this order; each is idempotent ("already gone" counts as done).
#: Backups are kept unless the request asks for them to be deleted too.
DELETE_FINALIZERS: tuple[str, ...] = ("proxy", "dns", "process", "files")
BACKUPS_FINALIZER = "backups"


def check_operation_allowed(kind: str, status: InstanceStatus) -> None:
    """Raise `IllegalTransitionError` unless an operation of `kind` may start in `status`."""
    if status not in ALLOWED_FROM.get(kind, frozenset()):
        raise IllegalTransitionError(f"cannot {kind} an instance that is {status}")


def delete_finalizers(keep_backups: bool) -> tuple[str, ...]:
    return DELETE_FINALIZERS if keep_backups else (*DELETE_FINALIZERS, BACKUPS_FINALIZER)
