"""Instances and operations: the idempotent asynchronous create, and the read side."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Response
from starlette.concurrency import run_in_threadpool

from api.consistency import read_your_writes
from api.deps import ContainerDep, UserDep
from api.openapi import IDEMPOTENCY_KEY
from api.pagination import CursorQuery, LimitQuery, page
from api.problems import Problem
from api.schemas import Accepted, CreateInstance, InstanceList, InstanceOut, InstancePatch, OperationOut
from api.server_access import MemberGrant, SettingsGrant
from domain.errors import DomainError
from projections import instances as instances_view
from projections import operations as operations_view
from projections import subusers as subusers_view
from services import nodes as nodes_service
from services.instance_settings import rename
from services.instances import request_instance
from services.server_access import MEMBER, authorize
from services.stats import disk_usage
from services.users import Principal

router = APIRouter(prefix="/api", tags=["instances"])


def _check_key(key: str | None) -> str:
    if key is None or key == "":
        raise Problem(400, "idempotency_key_missing", "send an Idempotency-Key header (1-255 printable characters)")
    if len(key) > 255 or not all(32 <= ord(c) < 127 for c in key):
        raise Problem(400, "idempotency_key_invalid", "the Idempotency-Key must be 1-255 printable ASCII characters")
    return key


def check_optional_key(key: str | None) -> str | None:
    """An optional Idempotency-Key (power, delete, backups): validated when present."""
    return None if key is None else _check_key(key)


def _visible(row: dict | None, user: Principal, what: str, member: bool = False) -> dict:
    if row is None or (row["owner_id"] != str(user.id) and not user.admin and not member):
        raise Problem(404, "not_found", f"no such {what}")
    return row


@router.post("/instances", status_code=202, response_model=Accepted)
async def create_instance(
    body: CreateInstance,
    response: Response,
    user: UserDep,
    container: ContainerDep,
    idempotency_key: Annotated[str | None, Header(json_schema_extra=IDEMPOTENCY_KEY)] = None,
) -> Accepted:
    key = _check_key(idempotency_key)
    accepted = await run_in_threadpool(
        request_instance, container.app, user.id, key, body.kind, body.name, body.template, body.variables,
        container.templates, container.quotas,
    )
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    await read_your_writes(container, response, accepted.position, "instances", "operations")
    status_url = f"/api/operations/{accepted.operation_id}"
    response.headers["Location"] = status_url
    return Accepted(operation_id=str(accepted.operation_id), instance_id=str(accepted.instance_id),
                    status_url=status_url)


@router.get("/instances", response_model=InstanceList)
def list_instances(user: UserDep, container: ContainerDep, limit: LimitQuery = 100,
                   cursor: CursorQuery = None) -> InstanceList:
    """Your instances and those you are a subuser of (each with your `role` and `permissions`), newest first,
    pending ones included (not deleted ones), a page at a time."""
    rows, next_cursor = page(lambda n, after: subusers_view.list_for_member(container.db, str(user.id), n, after),
                             limit, cursor)
    rows = nodes_service.overlay(container.db, rows, user.admin)
    return InstanceList(items=[InstanceOut(**r) for r in rows], next_cursor=next_cursor)


@router.get("/instances/{instance_id}", response_model=InstanceOut)
def get_instance(instance_id: UUID, user: UserDep, grant: MemberGrant, container: ContainerDep) -> InstanceOut:
    """The instance, with your `role` on it and your `permissions` (a subuser sees what the owner gave them)."""
    row = instances_view.get(container.db, str(instance_id))
    if row is None:
        raise Problem(404, "not_found", "no such instance")
    row = nodes_service.overlay(container.db, [row], user.admin)[0]
    return InstanceOut(**row, **disk_usage(container.app, container.driver, row), role=grant.role,
                       permissions=list(grant.permissions))


@router.patch("/instances/{instance_id}", response_model=InstanceOut)
async def change_instance(instance_id: UUID, body: InstancePatch, response: Response, user: UserDep,
                          grant: SettingsGrant, container: ContainerDep) -> InstanceOut:
    """Rename the server (the `settings` permission): the name follows the create rule (409 `name_taken` if
    the owner has another server by that name); its address keeps the name it was created with."""
    renamed = await run_in_threadpool(rename, container.app, grant, user.id, body.name)
    await read_your_writes(container, response, renamed.position, "instances", "activity")
    row = await run_in_threadpool(instances_view.get, container.db, str(instance_id))
    if row is None:
        raise Problem(404, "not_found", "no such instance")
    row = nodes_service.overlay(container.db, [row], user.admin)[0]
    return InstanceOut(**row, role=grant.role, permissions=list(grant.permissions))


@router.get("/operations/{operation_id}", response_model=OperationOut)
def get_operation(operation_id: UUID, user: UserDep, container: ContainerDep) -> OperationOut:
    """An operation on one of your servers, or on one you are a subuser of."""
    row = operations_view.get(container.db, str(operation_id))
    if row is not None and row["owner_id"] != str(user.id) and not user.admin:
        try:
            authorize(container.app, user.id, user.admin, UUID(row["instance_id"]), MEMBER)
        except DomainError:
            row = None
    return OperationOut(**_visible(row, user, "operation", member=row is not None))
