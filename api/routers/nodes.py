"""Operators: the nodes instances run on (README "More than one host"), and moving a server between them.

The agent secret goes in once, with `POST /api/admin/nodes`, and is never answered by any route: it is
stored encrypted (services/infrastructure/secret_box.py) and only the control plane's driver reads it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, ConfigDict, Field

from api.consistency import read_your_writes
from api.deps import AdminDep, ContainerDep
from api.pagination import CursorQuery, LimitQuery, page
from api.problems import Problem
from projections import nodes as nodes_view
from services import nodes

router = APIRouter(prefix="/api/admin", tags=["nodes"])


class CreateNode(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9-]*$")
    agent_url: str = Field(min_length=8, max_length=2048, pattern=r"^https?://\S+$")
    agent_secret: str = Field(min_length=1, max_length=1024, repr=False)
    public_host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    memory_mb: int = Field(gt=0, le=1 << 40)
    disk_mb: int = Field(gt=0, le=1 << 50)
    cpus: float = Field(gt=0, le=1 << 20)
    port_range: str = Field(pattern=r"^\d{1,5}-\d{1,5}$", examples=["30000-30999"])


class NodeOut(BaseModel):
    id: str
    name: str
    status: str
    agent_url: str
    public_host: str
    port_range: str
    cordoned: bool
    capacity: dict[str, float]
    allocated: dict[str, float]
    instances: int
    last_seen: str | None
    unreachable_since: str | None
    created_at: str


class NodeList(BaseModel):
    items: list[NodeOut]
    next_cursor: str | None = None


class MoveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: UUID


class MoveAccepted(BaseModel):
    operation_id: str


def _node(container: Any, node_id: UUID) -> NodeOut:
    row = nodes_view.get(container.db, str(node_id))
    if row is None:
        raise Problem(404, "not_found", "no such node")
    return NodeOut(**nodes.with_health(container.db, [row])[0])


@router.post("/nodes", status_code=201, response_model=NodeOut)
async def add_node(body: CreateNode, response: Response, _: AdminDep, container: ContainerDep) -> NodeOut:
    """Add a node whose `zlh agent` listens at `agent_url` (201); the secret is stored encrypted, never shown."""
    request = nodes.NodeRequest(**body.model_dump())
    node, position = await asyncio.to_thread(nodes.register_node, container.app, container.secret_box, request)
    await read_your_writes(container, response, position, "nodes")
    return _node(container, node.id)


@router.get("/nodes", response_model=NodeList)
def list_nodes(_: AdminDep, container: ContainerDep, limit: LimitQuery = 100, cursor: CursorQuery = None
               ) -> NodeList:
    """Every node with its status (`ready`, `unreachable`, `cordoned`), capacity, what is allocated, how many
    servers it holds and when its agent last answered; newest first, a page at a time."""
    rows, next_cursor = page(lambda n, after: nodes_view.list_nodes(container.db, n, after), limit, cursor)
    return NodeList(items=[NodeOut(**r) for r in nodes.with_health(container.db, rows)], next_cursor=next_cursor)


@router.get("/nodes/{node_id}", response_model=NodeOut)
def get_node(node_id: UUID, _: AdminDep, container: ContainerDep) -> NodeOut:
    return _node(container, node_id)


async def _change(container: Any, response: Response, node_id: UUID, command: Any) -> NodeOut:
    position = await asyncio.to_thread(command, container.app, node_id)
    await read_your_writes(container, response, position, "nodes")
    return _node(container, node_id)


@router.post("/nodes/{node_id}/cordon", response_model=NodeOut)
async def cordon(node_id: UUID, response: Response, _: AdminDep, container: ContainerDep) -> NodeOut:
    """No new servers go to the node; those on it keep running (and can be moved off)."""
    return await _change(container, response, node_id, nodes.cordon)


@router.post("/nodes/{node_id}/uncordon", response_model=NodeOut)
async def uncordon(node_id: UUID, response: Response, _: AdminDep, container: ContainerDep) -> NodeOut:
    return await _change(container, response, node_id, nodes.uncordon)


@router.delete("/nodes/{node_id}", status_code=204)
async def remove(node_id: UUID, response: Response, _: AdminDep, container: ContainerDep) -> Response:
    """Forget an empty node; 409 `node_not_empty` while servers are on it."""
    position = await asyncio.to_thread(nodes.remove_node, container.app, node_id)
    await read_your_writes(container, response, position, "nodes")
    return Response(status_code=204, headers=dict(response.headers))


@router.post("/instances/{instance_id}/move", status_code=202, response_model=MoveAccepted)
async def move(instance_id: UUID, body: MoveBody, response: Response, admin: AdminDep, container: ContainerDep,
               idempotency_key: Annotated[str | None, Header(max_length=255)] = None) -> MoveAccepted:
    """Move a server to another node: an operation of kind `move` (stop, back up, restore on the target,
    republish DNS and proxy, start, free the source); a failure leaves it whole where it was."""
    queued = await asyncio.to_thread(nodes.request_move, container.app, instance_id, body.node, admin.id,
                                     idempotency_key)
    await read_your_writes(container, response, queued.position, "instances", "operations")
    response.headers["Location"] = f"/api/operations/{queued.operation_id}"
    return MoveAccepted(operation_id=str(queued.operation_id))
