"""Use cases for nodes: register, cordon, remove; place an instance on one and free it again.

Placement is decided on the log: it loads the `Node` aggregates (not a read model, which may lag),
picks one with `choose_node`, and saves the node's `Allocated`, the `PortClaim` and the instance's
`Placed` in one `app.save`. Two concurrent placements on one node write the same node version, so
one fails with `IntegrityError` and places again with what it then sees: a node is never overbooked
and a port never handed out twice. See README "More than one host".
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.errors import DomainError
from domain.instance import Instance
from domain.node import (
    LOCAL_NODE,
    Need,
    NoCapacityError,
    Node,
    NodeNameTakenError,
    NodeRuleError,
    PortClaim,
    choose_node,
    node_id_for_name,
    parse_port_range,
)
from domain.text import check_text
from projections import nodes as nodes_view
from services.infrastructure.database import ReadModelDB
from services.infrastructure.secret_box import SecretBox
from services.infrastructure.store import ZLH

#: The `agent_url` of the node whose agent runs inside `zlh serve` (or is `ZLH_AGENT_URL`).
EMBEDDED = "embedded"
#: The `agent_url` of a Proxmox VE node (`ZLH_DRIVER=proxmox`): `proxmox://NODE`.
PROXMOX = "proxmox://"
NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
ATTEMPTS = 50


class NodeNotFoundError(DomainError):
    code = "not_found"


@dataclass(frozen=True)
class NodeRequest:
    name: str
    agent_url: str
    agent_secret: str
    public_host: str
    memory_mb: int
    disk_mb: int
    cpus: float
    port_range: str | None


def register_node(app: ZLH, box: SecretBox, req: NodeRequest) -> tuple[Node, int]:
    """Add a node (or a removed one's name again); the agent secret is stored encrypted. Returns (node, position)."""
    for field, value in (("name", req.name), ("agent_url", req.agent_url), ("public_host", req.public_host)):
        check_text(field, value)
    if not NAME.match(req.name):
        raise NodeRuleError("a node name is 1-63 of a-z, 0-9 and -, starting with a letter")
    if not re.match(r"^https?://[^\s/]+", req.agent_url):
        raise NodeRuleError("agent_url must be an http:// or https:// URL")
    if not req.agent_secret:
        raise NodeRuleError("agent_secret must not be empty")
    ports = parse_port_range(req.port_range)
    if ports is None:
        raise NodeRuleError("port_range is required, e.g. 30000-30999")
    details: dict[str, Any] = dict(agent_url=req.agent_url, secret=box.seal(req.agent_secret),
                                   public_host=req.public_host, memory_mb=req.memory_mb, disk_mb=req.disk_mb,
                                   cpus=req.cpus, port_low=ports[0], port_high=ports[1])
    existing = app.find(node_id_for_name(req.name), Node)
    if existing is None:
        node = Node(name=req.name, **details)
    else:
        existing.reregister(**details)
        node = existing
    try:
        recordings = app.save(node)
    except IntegrityError as exc:
        raise NodeNameTakenError(f"a node named {req.name!r} exists") from exc
    return node, recordings[-1].notification.id


def ensure_local_node(app: ZLH, memory_mb: int, disk_mb: int, cpus: float, port_range: str | None,
                      public_host: str) -> None:
    """The embedded default: one node, `local`, whose agent is the in-process one (idempotent)."""
    if app.find(node_id_for_name(LOCAL_NODE), Node) is not None:
        return
    ports = parse_port_range(port_range)
    node = Node(name=LOCAL_NODE, agent_url=EMBEDDED, secret="", public_host=public_host, memory_mb=memory_mb,
                disk_mb=disk_mb, cpus=cpus, port_low=ports[0] if ports else None,
                port_high=ports[1] if ports else None)
    with contextlib.suppress(IntegrityError):  # another process made it at the same time
        app.save(node)


def proxmox_node_name(pve_node: str) -> str:
    """The control-plane name of a PVE node: its own name, in the characters node names allow."""
    name = re.sub(r"[^a-z0-9-]", "-", pve_node.lower()).strip("-")[:63]
    return name if NAME.match(name) else f"pve-{name}"[:63].rstrip("-")


def ensure_proxmox_nodes(app: ZLH, pve_nodes: Iterable[str], memory_mb: int, disk_mb: int, cpus: float) -> int:
    """`ZLH_DRIVER=proxmox`: every PVE node of `ZLH_PROXMOX_NODES` is a node (`agent_url` `proxmox://NODE`, no
    secret, ports `auto`: each container has its own address), registered once (idempotent, as `local` is);
    the embedded `local` node, if an earlier run made it, is cordoned: nothing new is placed there. Returns the
    log position of what it saved (0: nothing: all there already)."""
    position = 0
    for pve in pve_nodes:
        name = proxmox_node_name(pve)
        if app.find(node_id_for_name(name), Node) is not None:
            continue  # registered already (or removed by staff: not brought back behind their back)
        node = Node(name=name, agent_url=f"{PROXMOX}{pve}", secret="", public_host="", memory_mb=memory_mb,
                    disk_mb=disk_mb, cpus=cpus, port_low=None, port_high=None)
        with contextlib.suppress(IntegrityError):  # another process made it at the same time
            position = app.save(node)[-1].notification.id
    local = app.find(node_id_for_name(LOCAL_NODE), Node)
    if local is not None and not local.removed and not local.cordoned:
        with contextlib.suppress(IntegrityError):
            local.cordon()
            position = app.save(local)[-1].notification.id
    return position


def _load(app: ZLH, node_id: UUID) -> Node:
    node = app.find(node_id, Node)
    if node is None or node.removed:
        raise NodeNotFoundError("no such node")
    return node


def _change(app: ZLH, node_id: UUID, command: str) -> int:
    for _ in range(ATTEMPTS):
        node = _load(app, node_id)
        getattr(node, command)()
        if not node.pending_events:
            return app.head()
        try:
            return app.save(node)[-1].notification.id
        except IntegrityError:
            continue
    raise RuntimeError(f"{command}: too much contention on node {node_id}")


def cordon(app: ZLH, node_id: UUID) -> int:
    """No new servers are placed on the node; those on it keep running."""
    return _change(app, node_id, "cordon")


def uncordon(app: ZLH, node_id: UUID) -> int:
    return _change(app, node_id, "uncordon")


def remove_node(app: ZLH, node_id: UUID) -> int:
    """Forget an empty node (`node_not_empty` otherwise)."""
    return _change(app, node_id, "remove")


# -- placement -----------------------------------------------------------------------------------


def need_of(resources: Any) -> Need:
    """A template's resources (`domain.templates.Resources`, or None for a template without any)."""
    if resources is None:
        return Need(0, 0, 0.0)
    return Need(int(resources.memory_mb), int(resources.disk_mb), float(resources.cpus))


@dataclass(frozen=True)
class Placement:
    node_id: UUID
    node: str
    port: int | None


def candidate_nodes(app: ZLH, db: ReadModelDB) -> list[Node]:
    """Every node not removed, as the log has it now (the read model only says which ids exist)."""
    ids = {UUID(r["id"]) for r in nodes_view.all_nodes(db)} | {node_id_for_name(LOCAL_NODE)}
    return [n for i in ids if (n := app.find(i, Node)) is not None and not n.removed]


def place(app: ZLH, db: ReadModelDB, instance_id: UUID, operation_id: UUID, need: Need,
          only: UUID | None = None, exclude: Iterable[UUID] = (), record: bool = True) -> Placement:
    """Allocate room and a port for the instance on a node (`only`: that one), recorded on the node, the port's
    claim and (unless `record` is False: a move reserves first and moves last) the instance; idempotent for an
    instance already placed. `NoCapacityError` when no node has room."""
    rng = random.SystemRandom()
    for _ in range(ATTEMPTS):
        instance: Instance = app.repository.get(instance_id)
        current = getattr(instance, "node_id", None)
        if current is not None and only is None:
            node = app.find(current, Node)
            if node is not None and str(instance_id) in node.allocations:
                return Placement(node.id, node.name, node.allocations[str(instance_id)]["port"])
        if only is not None:
            target = app.find(only, Node)
            if target is not None and str(instance_id) in target.allocations:
                return Placement(target.id, target.name, target.allocations[str(instance_id)]["port"])
        nodes = candidate_nodes(app, db)
        if only is not None:
            nodes = [n for n in nodes if n.id == only]
            if not nodes:
                raise NodeNotFoundError("no such node")
        node = choose_node(nodes, need, exclude)
        port, claim = None, None
        if node.port_low is not None and node.port_high is not None:
            port = node.free_port(rng.randrange(node.port_high - node.port_low + 1))
            if port is None:
                raise NoCapacityError(f"node {node.name} has no free port")
            claim = app.find(PortClaim.create_id(node.id, port), PortClaim)
            if claim is None:
                claim = PortClaim(node_id=node.id, port=port, instance_id=instance_id)
            else:
                try:
                    claim.claim(instance_id)
                except NoCapacityError:
                    continue  # a stale claim (should not happen: the node says the port is free); try another
        node.allocate(instance_id, port, need)
        if record:
            instance.place(operation_id, node.id, port)
        try:
            app.save(node, *([claim] if claim is not None else []), *([instance] if record else []))
        except IntegrityError:
            continue  # someone placed on this node (or claimed this port) meanwhile: look again
        return Placement(node.id, node.name, port)
    raise NoCapacityError("placement gave up: too much contention")


def release(app: ZLH, instance_id: UUID, node_id: UUID) -> bool:
    """Free what the instance holds on `node_id` (its room and its port); True if anything was held."""
    for _ in range(ATTEMPTS):
        node = app.find(node_id, Node)
        if node is None or str(instance_id) not in node.allocations:
            return False
        port = node.allocations[str(instance_id)]["port"]
        node.release(instance_id)
        touched: list[Any] = [node]
        if port is not None:
            claim = app.find(PortClaim.create_id(node_id, port), PortClaim)
            if claim is not None and claim.release(instance_id):
                touched.append(claim)
        try:
            app.save(*touched)
        except IntegrityError:
            continue
        return True
    raise RuntimeError(f"release: too much contention on node {node_id}")


def node_of(app: ZLH, instance_id: UUID) -> UUID | None:
    instance = app.find(instance_id, Instance)
    return getattr(instance, "node_id", None) if instance is not None else None


# -- reads for the admin views -------------------------------------------------------------------


def with_health(db: ReadModelDB, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nodes as listed, each with `last_seen` (when its agent last answered the monitor; None: not yet)."""
    from projections.base import iso
    from services.infrastructure.node_health import last_seen

    seen = last_seen(db)
    return [r | {"last_seen": iso(seen[r["id"]]) if r["id"] in seen else None} for r in rows]


def overlay(db: ReadModelDB, rows: list[dict[str, Any]], admin: bool) -> list[dict[str, Any]]:
    """Instance rows as the API shows them: `unreachable` while their node does not answer (what the log
    says comes back with the node), and, for staff, which node and port each is on."""
    placed = nodes_view.placements(db, [r["id"] for r in rows])
    out = []
    for row in rows:
        where = placed.get(row["id"])
        row = dict(row)
        if where is not None and where["unreachable"] and row["status"] not in ("deleted", "failed"):
            row["status"] = "unreachable"
        if admin:
            row["node"] = where["node"] if where else LOCAL_NODE
            row["node_id"] = where["node_id"] if where else str(node_id_for_name(LOCAL_NODE))
            row["port"] = where["port"] if where and where["port"] is not None else row.get("port")
        out.append(row)
    return out


def request_move(app: ZLH, instance_id: UUID, node_id: UUID, actor_id: UUID, key: str | None = None) -> Any:
    """Queue a `move` of the instance to `node_id` (admins): 404 for an unknown instance or node."""
    from services.lifecycle import _request, load_instance

    target = app.find(node_id, Node)
    if target is None or target.removed:
        raise NodeNotFoundError("no such node")
    instance = load_instance(app, instance_id, None)
    if getattr(instance, "node_id", None) == node_id or (
            getattr(instance, "node_id", None) is None and node_id == node_id_for_name(LOCAL_NODE)):
        raise NodeRuleError("the server is on that node already")
    source = app.find(getattr(instance, "node_id", None) or node_id_for_name(LOCAL_NODE), Node)
    if target.agent_url.startswith(PROXMOX) or (source is not None and source.agent_url.startswith(PROXMOX)):
        raise NodeRuleError("servers on Proxmox nodes cannot be moved by ZLH yet")

    def begin(inst: Instance, op: Any) -> None:
        inst.begin_operation(op.id, "move")

    return _request(app, instance.owner_id, instance_id, "move", {"node": str(node_id)}, key, begin,
                    actor_id=actor_id)
