"""Use cases for an instance's files: ownership checked here, paths checked by the node agent."""

from __future__ import annotations

from uuid import UUID

from domain.lifecycle import InstanceStatus
from services.billing import check_billing_gate
from services.infrastructure.store import ZLH
from services.lifecycle import NotFoundError, load_instance
from services.ports import InstanceDriver, InstanceSpec

MAX_WRITE_BYTES = 8 * 1024 * 1024


def _spec(app: ZLH, owner_id: UUID | None, instance_id: UUID) -> InstanceSpec:
    instance = load_instance(app, instance_id, owner_id)
    if instance.status in (InstanceStatus.DELETED, InstanceStatus.DELETING):
        raise NotFoundError("no such instance")
    return InstanceSpec(instance.id, instance.kind.value, instance.template, instance.edge_name)


def list_files(app: ZLH, driver: InstanceDriver, owner_id: UUID | None, instance_id: UUID, path: str) -> list[dict]:
    return driver.list_files(_spec(app, owner_id, instance_id), path)


def read_file(app: ZLH, driver: InstanceDriver, owner_id: UUID | None, instance_id: UUID, path: str) -> bytes:
    return driver.read_file(_spec(app, owner_id, instance_id), path)


def write_file(app: ZLH, driver: InstanceDriver, owner_id: UUID | None, instance_id: UUID, path: str,
               content: bytes) -> None:
    spec = _spec(app, owner_id, instance_id)
    check_billing_gate(app, load_instance(app, instance_id, None).owner_id, "write_files")
    driver.write_file(spec, path, content)
