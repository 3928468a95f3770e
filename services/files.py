"""Use cases for an instance's files: ownership and the shape of paths checked here, again by the node agent.

A path the agent would refuse for its shape (NUL, `..`, a name over 255 bytes, over 4,096 bytes in
all) is `bad_path` here already, so the node is never asked; where it leads is for the agent to say.
"""

from __future__ import annotations

from uuid import UUID

from domain.lifecycle import InstanceStatus
from services.activity import record_directory_made, record_entry_moved, record_entry_removed, record_file_write
from services.agent.files import MAX_WRITE_BYTES, normalize
from services.billing import check_billing_gate
from services.infrastructure.store import ZLH
from services.lifecycle import NotFoundError, load_instance
from services.ports import InstanceDriver, InstanceSpec

__all__ = ["MAX_WRITE_BYTES", "delete_path", "list_files", "make_directory", "read_file", "rename_path",
           "write_file"]


def _spec(app: ZLH, owner_id: UUID | None, instance_id: UUID, path: str) -> InstanceSpec:
    instance = load_instance(app, instance_id, owner_id)
    if instance.status in (InstanceStatus.DELETED, InstanceStatus.DELETING):
        raise NotFoundError("no such instance")
    normalize(path)  # bad_path before the node is asked
    return InstanceSpec(instance.id, instance.kind.value, instance.template, instance.edge_name)


def list_files(app: ZLH, driver: InstanceDriver, owner_id: UUID | None, instance_id: UUID, path: str) -> list[dict]:
    return driver.list_files(_spec(app, owner_id, instance_id, path), path)


def read_file(app: ZLH, driver: InstanceDriver, owner_id: UUID | None, instance_id: UUID, path: str) -> bytes:
    return driver.read_file(_spec(app, owner_id, instance_id, path), path)


def write_file(app: ZLH, driver: InstanceDriver, owner_id: UUID | None, instance_id: UUID, path: str,
               content: bytes, actor_id: UUID | None = None) -> int | None:
    """Write through the node; then record the write (path and size) for `actor_id`: the log position."""
    spec = _spec(app, owner_id, instance_id, path)
    check_billing_gate(app, load_instance(app, instance_id, None).owner_id, "write_files")
    driver.write_file(spec, path, content)
    if actor_id is None:
        return None
    return record_file_write(app, instance_id, actor_id, path, len(content))


def _writable(app: ZLH, owner_id: UUID | None, instance_id: UUID, *paths: str) -> InstanceSpec:
    """The spec for a change to the files: every path well-formed, and the owner's billing allows writes."""
    spec = _spec(app, owner_id, instance_id, paths[0])
    for path in paths[1:]:
        normalize(path)
    check_billing_gate(app, load_instance(app, instance_id, None).owner_id, "write_files")
    return spec


def make_directory(app: ZLH, driver: InstanceDriver, owner_id: UUID | None, instance_id: UUID, path: str,
                   actor_id: UUID, via: str) -> int:
    """Create a directory through the node, then record it for `actor_id`: the log position."""
    driver.make_directory(_writable(app, owner_id, instance_id, path), path)
    return record_directory_made(app, instance_id, actor_id, path, via)


def delete_path(app: ZLH, driver: InstanceDriver, owner_id: UUID | None, instance_id: UUID, path: str,
                directory: bool, actor_id: UUID, via: str) -> int:
    """Remove a file (or an empty directory) through the node, then record it: the log position."""
    driver.delete_path(_writable(app, owner_id, instance_id, path), path, directory)
    return record_entry_removed(app, instance_id, actor_id, path, directory, via)


def rename_path(app: ZLH, driver: InstanceDriver, owner_id: UUID | None, instance_id: UUID, source: str,
                target: str, overwrite: bool, actor_id: UUID, via: str) -> int:
    """Move an entry through the node, then record it: the log position."""
    driver.rename_path(_writable(app, owner_id, instance_id, source, target), source, target, overwrite)
    return record_entry_moved(app, instance_id, actor_id, source, target, via)
