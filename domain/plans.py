"""Which steps an operation runs, in order: pure data the provisioning manager follows."""

from __future__ import annotations

from domain.lifecycle import InstanceKind

#: Every step is one idempotent call to the driver, bracketed by intent and result events.
CREATE_STEPS: dict[InstanceKind, tuple[str, ...]] = {
    InstanceKind.GAME: (
        "allocate_port",
        "create_directory",
        "start_process",
        "wait_connectable",
        "publish_dns",
        "publish_proxy",
    ),
    InstanceKind.DEV: ("allocate_port", "create_directory", "start_process", "wait_connectable"),
}


def create_steps(kind: InstanceKind) -> tuple[str, ...]:
    return CREATE_STEPS[kind]
