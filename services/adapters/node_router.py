"""`NodeRouter`: the `InstanceDriver` the control plane uses when there are nodes: it sends each call to
the agent of the node the instance lives on.

Every caller (provisioning, repairs, schedules, the files and console routes) keeps calling one driver;
this one looks the instance's node up (the nodes read model, else the log), and:
- the `local` node is the driver the embedded mode built (the in-process agent, or `ZLH_AGENT_URL`);
- any other node gets an `AgentDriver` for its `agent_url` and its (decrypted) secret, made once;
- a Proxmox VE node (`agent_url` `proxmox://NODE`, `ZLH_DRIVER=proxmox`) gets the proxmox driver's view of
  that node (`ProxmoxDriver.on_node`): its health is the PVE API's, its observations its containers;
- an instance on a node that is `unreachable` fails at once with `node_unreachable`: no call waits on a
  host that is gone;
- `allocate_port` returns the port placement claimed on the node (nodes with an `auto` range ask their agent);
- `observe()` merges what every node reports; for a node that does not answer, its instances are reported
  as present, so the controller never proposes to recreate or restart a server it simply cannot see.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

from domain.backup import Backup
from domain.instance import Instance
from domain.node import LOCAL_NODE, Node, node_id_for_name
from projections import nodes as nodes_view
from services.infrastructure.database import ReadModelDB
from services.infrastructure.secret_box import SecretBox
from services.infrastructure.store import ZLH
from services.ports import DriverError, InstanceDriver, InstanceSpec, spec_address

log = logging.getLogger(__name__)

UNREACHABLE_MESSAGE = "the server's node is not answering; the server is unreachable until it is back"
LOCAL_ID = node_id_for_name(LOCAL_NODE)
#: `agent_url` of a Proxmox VE node (`services.adapters.proxmox_driver.SCHEME`, not imported: proxmoxer is heavy).
PROXMOX_SCHEME = "proxmox://"

DriverFactory = Callable[[str, str], InstanceDriver]


def agent_driver(url: str, secret: str) -> InstanceDriver:
    from services.adapters.agent_client import AgentDriver

    return AgentDriver(url, secret)


class NodeRouter:
    def __init__(self, app: ZLH, db: ReadModelDB, box: SecretBox, local: InstanceDriver,
                 factory: DriverFactory = agent_driver) -> None:
        self.app, self.db, self.box, self.local, self.factory = app, db, box, local, factory
        self._drivers: dict[UUID, tuple[tuple[str, str], InstanceDriver]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "NodeRouter()"

    # Which node.

    def node_driver(self, node_id: UUID | str) -> InstanceDriver:
        """The driver of one node (its agent), whatever its health."""
        node_id = UUID(str(node_id))
        if node_id == LOCAL_ID:
            return self.local
        node = self.app.find(node_id, Node)
        if node is None:
            raise DriverError("node_not_found", "the server's node is not known")
        if node.agent_url.startswith(PROXMOX_SCHEME):
            return self._proxmox_node(node_id, node.agent_url)
        key = (node.agent_url, node.secret)
        with self._lock:
            cached = self._drivers.get(node_id)
            if cached is not None and cached[0] == key:
                return cached[1]
            driver = self.factory(node.agent_url, self.box.open(node.secret))
            self._drivers[node_id] = (key, driver)
            return driver

    def _proxmox_node(self, node_id: UUID, agent_url: str) -> InstanceDriver:
        on_node = getattr(self.local, "on_node", None)
        if on_node is None:
            raise DriverError("node_not_found", "the server's node is a Proxmox node; ZLH_DRIVER is not proxmox")
        key = (agent_url, "")
        with self._lock:
            cached = self._drivers.get(node_id)
            if cached is not None and cached[0] == key:
                return cached[1]
            driver = on_node(agent_url[len(PROXMOX_SCHEME):])
            self._drivers[node_id] = (key, driver)
            return driver

    def proxmox_node_of(self, spec: InstanceSpec) -> str | None:
        """The PVE node the instance was placed on (the proxmox driver creates its container there)."""
        placed = self.placement(spec.instance_id)
        if placed is None:
            return None
        node = self.app.find(UUID(placed["node_id"]), Node)
        if node is None or not node.agent_url.startswith(PROXMOX_SCHEME):
            return None
        return node.agent_url[len(PROXMOX_SCHEME):]

    def placement(self, instance_id: UUID) -> dict[str, Any] | None:
        found = nodes_view.placement_of(self.db, str(instance_id))
        if found is not None:
            return found
        instance = self.app.find(instance_id, Instance)
        node_id = getattr(instance, "node_id", None) if instance is not None else None
        if node_id is None:
            return None  # placed before nodes existed, or not yet: the local node
        row = nodes_view.get(self.db, str(node_id))
        if row is None:  # a node the read model has not caught up with yet: the log knows it
            node = self.app.find(node_id, Node)
            row = {"name": node.name, "public_host": node.public_host,
                   "status": "unreachable" if node.unreachable else "ready"} if node is not None else None
        return {"node_id": str(node_id), "port": getattr(instance, "placed_port", None),
                "node": row["name"] if row else "", "public_host": row["public_host"] if row else "",
                "node_status": row["status"] if row else "ready"}

    def driver_for(self, instance_id: UUID) -> InstanceDriver:
        placed = self.placement(instance_id)
        if placed is None:
            return self.local
        if placed["node_status"] == "unreachable":
            raise DriverError("node_unreachable", UNREACHABLE_MESSAGE)
        return self.node_driver(placed["node_id"])

    # The port's methods that need more than routing.

    def allocate_port(self, spec: InstanceSpec) -> int:
        placed = self.placement(spec.instance_id)
        if placed is not None and placed["port"] is not None:
            return int(placed["port"])
        return self.driver_for(spec.instance_id).allocate_port(spec)

    def public_host(self, spec: InstanceSpec) -> str:
        placed = self.placement(spec.instance_id)
        if placed is None or UUID(placed["node_id"]) == LOCAL_ID or not placed["public_host"]:
            return self.local.public_host(spec)
        return str(placed["public_host"])

    def address(self, spec: InstanceSpec, port: int) -> str:
        placed = self.placement(spec.instance_id)
        if placed is None or UUID(placed["node_id"]) == LOCAL_ID:
            return self.local.address(spec, port)
        return spec_address(spec, self.public_host(spec), port)

    def _backup_driver(self, backup_id: UUID) -> InstanceDriver:
        """The node that holds a backup's archive: its instance's node (the local one if unknown)."""
        backup = self.app.find(backup_id, Backup)
        return self.local if backup is None else self.driver_for(backup.instance_id)

    def delete_backup(self, backup_id: UUID) -> None:
        self._backup_driver(backup_id).delete_backup(backup_id)

    def upload_backup(self, backup_id: UUID, parts: list[dict], part_size: int) -> list[dict]:
        return self._backup_driver(backup_id).upload_backup(backup_id, parts, part_size)

    def node_stats(self) -> dict[str, dict[str, Any]]:
        """The latest sample of every running server on every node that answers (for /metrics/instances)."""
        samples: dict[str, dict[str, Any]] = {}
        for row in nodes_view.all_nodes(self.db) or [{"id": str(LOCAL_ID), "status": "ready", "name": LOCAL_NODE}]:
            if row["status"] == "unreachable":
                continue
            try:
                samples.update(self.node_driver(row["id"]).node_stats())
            except DriverError as exc:
                log.warning("node %s did not answer stats: %s", row["name"], exc.code)
        return samples

    def observe(self) -> dict[str, Any]:
        """What every node reports; a node that does not answer: its servers taken to be as they were. With
        the proxmox driver, its nodes (and `local`, whose driver it is too) are observed in one pass over the
        whole cluster: a container is seen wherever it is (after a `pct migrate` too)."""
        processes: set[str] = set()
        directories: set[str] = set()
        containers: dict[int, dict[str, Any]] = {}
        rows = nodes_view.all_nodes(self.db) or [{"id": str(LOCAL_ID), "status": "ready", "name": LOCAL_NODE}]
        if not any(UUID(r["id"]) == LOCAL_ID for r in rows):
            rows.append({"id": str(LOCAL_ID), "status": "ready", "name": LOCAL_NODE})
        cluster = getattr(self.local, "on_node", None) is not None

        def shared(row: dict[str, Any]) -> bool:
            return cluster and (UUID(row["id"]) == LOCAL_ID or str(row.get("agent_url", "")).startswith(
                PROXMOX_SCHEME))

        def take(seen: dict[str, Any]) -> None:
            processes.update(seen["processes"])
            directories.update(seen["directories"])
            containers.update({int(c["vmid"]): c for c in seen.get("containers", [])})

        def unseen(row: dict[str, Any]) -> None:  # cannot see it: take its servers to be as they were
            instances = nodes_view.instances_on(self.db, row["id"])
            processes.update(instances)
            directories.update(instances)

        for row in [r for r in rows if not shared(r)]:
            seen: dict[str, Any] | None = None
            if row["status"] != "unreachable":
                try:
                    seen = self.node_driver(row["id"]).observe()
                except DriverError as exc:
                    log.warning("node %s did not answer observe: %s", row["name"], exc.code)
            if seen is None:
                unseen(row)
            else:
                take(seen)
        pve = [r for r in rows if shared(r)]
        if pve:
            try:
                take(self.local.observe())
                pve = [r for r in pve if r["status"] == "unreachable"]
            except DriverError as exc:
                log.warning("the Proxmox cluster did not answer observe: %s", exc.code)
            for row in pve:
                unseen(row)
        out: dict[str, Any] = {"processes": sorted(processes), "directories": sorted(directories)}
        if containers:  # the proxmox driver's: every container tagged ours (the controller's orphans)
            out["containers"] = [containers[v] for v in sorted(containers)]
        return out

    def __getattr__(self, name: str) -> Any:
        """Every other step takes the spec first: send it to the instance's node."""
        if name.startswith("_"):
            raise AttributeError(name)
        target = getattr(self.local, name)
        if not callable(target):
            return target

        def routed(*args: Any, **kwargs: Any) -> Any:
            spec = args[0] if args else kwargs.get("spec")
            if not isinstance(spec, InstanceSpec):
                return target(*args, **kwargs)  # not an instance's step (a fake's test helper, say)
            return getattr(self.driver_for(spec.instance_id), name)(*args, **kwargs)

        return routed

    def close(self) -> None:
        with self._lock:
            for _, driver in self._drivers.values():
                close = getattr(driver, "close", None)
                if close is not None:
                    close()
            self._drivers.clear()
        close = getattr(self.local, "close", None)
        if close is not None:
            close()
