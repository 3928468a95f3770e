"""Nodes: the hosts instances run on, their capacity, and what is placed on them.

A `Node` holds its capacity (memory, disk, cpus, a port range) and every allocation on it
(instance -> port and resources). Placing an instance appends `Node.Allocated`: two concurrent
placements on one node write the same next version, so optimistic concurrency lets one win and
the other places again with what it now sees; a node is never overbooked. A `PortClaim` (id from
node and port) makes "one port, one instance" a store guarantee as well, as `NameClaim` does for names.

Health is recorded as transitions only (`BecameUnreachable`, `Recovered`), never as heartbeats: the
monitor keeps the last time it heard a node outside the log.

Placement itself is `choose_node`, pure: the ready, uncordoned nodes with room, least loaded first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError
from domain.ids import derive

#: The name of the node the embedded mode runs in-process.
LOCAL_NODE = "local"


class NoCapacityError(DomainError):
    """No ready, uncordoned node has room for the instance's resources and a free port."""

    code = "no_capacity"


class NodeNotEmptyError(DomainError):
    """A node with instances on it cannot be removed."""

    code = "node_not_empty"


class NodeNameTakenError(DomainError):
    code = "name_taken"


class NodeUnreachableError(DomainError):
    """The instance's node does not answer: nothing can be done to the instance until it does."""

    code = "node_unreachable"


class NodeRuleError(DomainError):
    code = "validation_error"


def node_id_for_name(name: str) -> UUID:
    return derive("node", name)


def port_claim_id(node_id: UUID, port: int) -> UUID:
    return derive("port-claim", node_id, port)


def parse_port_range(text: str | None) -> tuple[int, int] | None:
    """`"30000-30999"` -> (30000, 30999); None or "" or "auto" -> None (the node's agent picks ports)."""
    if text is None or text.strip() in ("", "auto"):
        return None
    low, sep, high = text.strip().partition("-")
    try:
        lo, hi = int(low), int(high if sep else low)
    except ValueError as exc:
        raise NodeRuleError(f"port_range must look like 30000-30999, not {text!r}") from exc
    if not 1024 <= lo <= hi <= 65535:
        raise NodeRuleError("port_range must lie within 1024-65535, low end first")
    return lo, hi


@dataclass(frozen=True)
class Need:
    """What an instance takes from its node (a template's resources)."""

    memory_mb: int
    disk_mb: int
    cpus: float


class Node(Aggregate):
    TOPIC = "zlh.Node"

    class Event(Aggregate.Event):
        TOPIC = "zlh.Node.Event"

    class Registered(Event, Aggregate.Created):
        """`secret` is the agent secret, encrypted by the control plane (never the plain text)."""

        TOPIC = "zlh.Node.Registered"
        name: str
        agent_url: str
        secret: str
        public_host: str
        memory_mb: int
        disk_mb: int
        cpus: float
        port_low: int | None
        port_high: int | None

    class Reregistered(Event):
        """A removed node's name added again, with new details."""

        TOPIC = "zlh.Node.Reregistered"
        agent_url: str
        secret: str
        public_host: str
        memory_mb: int
        disk_mb: int
        cpus: float
        port_low: int | None
        port_high: int | None

    class Cordoned(Event):
        TOPIC = "zlh.Node.Cordoned"

    class Uncordoned(Event):
        TOPIC = "zlh.Node.Uncordoned"

    class BecameUnreachable(Event):
        TOPIC = "zlh.Node.BecameUnreachable"
        last_seen: str | None

    class Recovered(Event):
        """The node answers again; `processes` is what its agent reported running."""

        TOPIC = "zlh.Node.Recovered"
        processes: list[str]

    class Allocated(Event):
        TOPIC = "zlh.Node.Allocated"
        instance_id: UUID
        port: int | None
        memory_mb: int
        disk_mb: int
        cpus: float

    class Released(Event):
        TOPIC = "zlh.Node.Released"
        instance_id: UUID

    class Removed(Event):
        TOPIC = "zlh.Node.Removed"

    @staticmethod
    def create_id(name: str) -> UUID:
        return node_id_for_name(name)

    @event(Registered)
    def __init__(self, name: str, agent_url: str, secret: str, public_host: str, memory_mb: int, disk_mb: int,
                 cpus: float, port_low: int | None, port_high: int | None) -> None:
        self.name = name
        self._details(agent_url, secret, public_host, memory_mb, disk_mb, cpus, port_low, port_high)
        self.cordoned = False
        self.unreachable = False
        self.removed = False
        self.allocations: dict[str, dict[str, Any]] = {}

    def _details(self, agent_url: str, secret: str, public_host: str, memory_mb: int, disk_mb: int, cpus: float,
                 port_low: int | None, port_high: int | None) -> None:
        self.agent_url, self.secret, self.public_host = agent_url, secret, public_host
        self.memory_mb, self.disk_mb, self.cpus = memory_mb, disk_mb, cpus
        self.port_low, self.port_high = port_low, port_high

    # Queries.

    @property
    def used_ports(self) -> set[int]:
        return {a["port"] for a in self.allocations.values() if a["port"] is not None}

    def allocated(self) -> dict[str, float]:
        values = list(self.allocations.values())
        return {"memory_mb": sum(a["memory_mb"] for a in values), "disk_mb": sum(a["disk_mb"] for a in values),
                "cpus": sum(a["cpus"] for a in values)}

    @property
    def schedulable(self) -> bool:
        return not (self.cordoned or self.unreachable or self.removed)

    def fits(self, need: Need) -> bool:
        used = self.allocated()
        if used["memory_mb"] + need.memory_mb > self.memory_mb or used["disk_mb"] + need.disk_mb > self.disk_mb:
            return False
        return self.port_low is None or self.free_port(0) is not None

    def free_port(self, offset: int) -> int | None:
        """A port of the range no allocation holds, scanning from `offset` into the range (wrapping)."""
        if self.port_low is None or self.port_high is None:
            return None
        size = self.port_high - self.port_low + 1
        used = self.used_ports
        for i in range(size):
            port = self.port_low + (offset + i) % size
            if port not in used:
                return port
        return None

    def load(self) -> float:
        """The larger of the memory and disk shares in use: what placement spreads."""
        used = self.allocated()
        return max(used["memory_mb"] / max(self.memory_mb, 1), used["disk_mb"] / max(self.disk_mb, 1))

    # Commands.

    def reregister(self, agent_url: str, secret: str, public_host: str, memory_mb: int, disk_mb: int, cpus: float,
                   port_low: int | None, port_high: int | None) -> None:
        if not self.removed:
            raise NodeNameTakenError(f"a node named {self.name!r} exists")
        self._reregistered(agent_url=agent_url, secret=secret, public_host=public_host, memory_mb=memory_mb,
                           disk_mb=disk_mb, cpus=cpus, port_low=port_low, port_high=port_high)

    def cordon(self) -> None:
        if not self.cordoned:
            self._cordoned()

    def uncordon(self) -> None:
        if self.cordoned:
            self._uncordoned()

    def mark_unreachable(self, last_seen: str | None) -> bool:
        if self.unreachable or self.removed:
            return False
        self._became_unreachable(last_seen=last_seen)
        return True

    def mark_recovered(self, processes: Iterable[str]) -> bool:
        if not self.unreachable:
            return False
        self._recovered(processes=sorted(processes))
        return True

    def allocate(self, instance_id: UUID, port: int | None, need: Need) -> None:
        """Reserve `need` (and `port`) for the instance; idempotent for the same instance."""
        if str(instance_id) in self.allocations:
            return
        if not self.schedulable:
            raise NoCapacityError(f"node {self.name} takes no new servers now")
        if not self.fits(need):
            raise NoCapacityError(f"node {self.name} has no room for the server")
        if self.port_low is not None and (port is None or port in self.used_ports
                                          or not self.port_low <= port <= (self.port_high or 0)):
            raise NoCapacityError(f"port {port} is not free on node {self.name}")
        self._allocated(instance_id=instance_id, port=port, memory_mb=need.memory_mb, disk_mb=need.disk_mb,
                        cpus=need.cpus)

    def release(self, instance_id: UUID) -> bool:
        if str(instance_id) not in self.allocations:
            return False
        self._released(instance_id=instance_id)
        return True

    def remove(self) -> None:
        if self.allocations:
            raise NodeNotEmptyError(f"node {self.name} still has {len(self.allocations)} server(s); move them first")
        if not self.removed:
            self._removed()

    # Events: assign state only.

    @event(Reregistered)
    def _reregistered(self, agent_url: str, secret: str, public_host: str, memory_mb: int, disk_mb: int,
                      cpus: float, port_low: int | None, port_high: int | None) -> None:
        self._details(agent_url, secret, public_host, memory_mb, disk_mb, cpus, port_low, port_high)
        self.removed = self.cordoned = self.unreachable = False

    @event(Cordoned)
    def _cordoned(self) -> None:
        self.cordoned = True

    @event(Uncordoned)
    def _uncordoned(self) -> None:
        self.cordoned = False

    @event(BecameUnreachable)
    def _became_unreachable(self, last_seen: str | None) -> None:
        self.unreachable = True

    @event(Recovered)
    def _recovered(self, processes: list[str]) -> None:
        self.unreachable = False

    @event(Allocated)
    def _allocated(self, instance_id: UUID, port: int | None, memory_mb: int, disk_mb: int, cpus: float) -> None:
        self.allocations[str(instance_id)] = {"port": port, "memory_mb": memory_mb, "disk_mb": disk_mb,
                                              "cpus": cpus}

    @event(Released)
    def _released(self, instance_id: UUID) -> None:
        self.allocations.pop(str(instance_id), None)

    @event(Removed)
    def _removed(self) -> None:
        self.removed = True


class PortClaim(Aggregate):
    """One per (node, port): whichever instance holds it. Concurrent claims collide on the id."""

    TOPIC = "zlh.PortClaim"

    class Event(Aggregate.Event):
        TOPIC = "zlh.PortClaim.Event"

    class Claimed(Event, Aggregate.Created):
        TOPIC = "zlh.PortClaim.Claimed"
        node_id: UUID
        port: int
        instance_id: UUID

    class Reclaimed(Event):
        TOPIC = "zlh.PortClaim.Reclaimed"
        instance_id: UUID

    class Released(Event):
        TOPIC = "zlh.PortClaim.Released"
        instance_id: UUID

    @staticmethod
    def create_id(node_id: UUID, port: int) -> UUID:
        return port_claim_id(node_id, port)

    @event(Claimed)
    def __init__(self, node_id: UUID, port: int, instance_id: UUID) -> None:
        self.node_id, self.port = node_id, port
        self.instance_id: UUID | None = instance_id

    def claim(self, instance_id: UUID) -> None:
        if self.instance_id == instance_id:
            return
        if self.instance_id is not None:
            raise NoCapacityError(f"port {self.port} is taken")
        self._reclaimed(instance_id=instance_id)

    def release(self, instance_id: UUID) -> bool:
        if self.instance_id != instance_id:
            return False
        self._released(instance_id=instance_id)
        return True

    @event(Reclaimed)
    def _reclaimed(self, instance_id: UUID) -> None:
        self.instance_id = instance_id

    @event(Released)
    def _released(self, instance_id: UUID) -> None:
        self.instance_id = None


def choose_node(nodes: Iterable[Node], need: Need, exclude: Iterable[UUID] = ()) -> Node:
    """The schedulable node with room for `need` and the least load (name breaks ties); else NoCapacityError."""
    skip = set(exclude)
    fitting = [n for n in nodes if n.id not in skip and n.schedulable and n.fits(need)]
    if not fitting:
        raise NoCapacityError("no node has room for this server now; staff have been alerted")
    return min(fitting, key=lambda n: (n.load(), len(n.allocations), n.name))
