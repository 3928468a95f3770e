"""Use cases for an instance's files: ownership and the shape of paths checked here, again by the node agent.

A path the agent would refuse for its shape (NUL, `..`, a name over 255 bytes, over 4,096 bytes in
all) is `bad_path` here already, so the node is never asked; where it leads is for the agent to say.
"""

from __future__ import annotations

from uuid import UUID

from domain.lifecycle import InstanceStatus
from services.agent.files import MAX_WRITE_BYTES, normalize
from services.billing import check_billing_gate
from services.infrastructure.store import ZLH
from services.lifecycle import NotFoundError, load_instance
from services.ports import InstanceDriver, InstanceSpec

__all__ = ["MAX_WRITE_BYTES", "list_files", "read_file", "write_file"]


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
               content: bytes) -> None:
    spec = _spec(app, owner_id, instance_id, path)
    check_billing_gate(app, load_instance(app, instance_id, None).owner_id, "write_files")
    driver.write_file(spec, path, content)
