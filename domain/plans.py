"""Which steps an operation runs, in order: pure data the provisioning manager follows."""

from __future__ import annotations

from domain.lifecycle import InstanceKind

#: Every step is one idempotent call to the driver, bracketed by intent and result events. `install` puts
#: what the template needs on the node (once per node: later it only finds it there) before anything starts.
CREATE_STEPS: dict[InstanceKind, tuple[str, ...]] = {
    InstanceKind.GAME: (
        "allocate_port",
        "create_directory",
        "install",
        "start_process",
        "wait_connectable",
        "publish_dns",
        "publish_proxy",
    ),
    InstanceKind.DEV: ("allocate_port", "create_directory", "install", "start_process", "wait_connectable"),
}


def create_steps(kind: InstanceKind) -> tuple[str, ...]:
    return CREATE_STEPS[kind]


#: Power operations: the driver steps, in order. Whatever starts a server installs first (a no-op once the
#: node has the install), while the old server, if any, still runs.
POWER_STEPS: dict[str, tuple[str, ...]] = {
    "start": ("install", "start_process", "wait_connectable"),
    "stop": ("stop_process",),
    "restart": ("install", "stop_process", "start_process", "wait_connectable"),
}


def restore_steps(was_running: bool) -> tuple[str, ...]:
    """Stop the server if it runs, swap the files, start it again if it was running."""
    if was_running:
        return ("install", "stop_process", "restore_backup", "start_process", "wait_connectable")
    return ("restore_backup",)


#: Each delete finalizer and the driver step that removes it.
FINALIZER_STEPS: dict[str, str] = {
    "proxy": "remove_proxy",
    "dns": "remove_dns",
    "process": "stop_process",
    "files": "remove_directory",
    "backups": "delete_backups",
}
