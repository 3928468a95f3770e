"""`NodesProjection`: every node (capacity, cordon and health flags) and every allocation on one.

`rm_nodes` is what operators list; `rm_node_allocations` says which node (and port) each instance
lives on: the router of driver calls and the instance views read it. A node's status is derived:
`unreachable` when its monitor said so, else `cordoned` when cordoned, else `ready`. When its agent
last answered is not an event: `services.infrastructure.node_health` keeps it.
"""

from __future__ import annotations

from typing import Any

from domain.instance import Instance
from domain.node import Node
from projections.base import After, Cursor, Database, Projection, Table, iso, newest_first

NODES = "rm_nodes"
ALLOCATIONS = "rm_node_allocations"


class NodesProjection(Projection):
    name = "nodes"
    tables = (
        Table(NODES, "id TEXT PRIMARY KEY, name TEXT NOT NULL, agent_url TEXT NOT NULL, public_host TEXT NOT NULL, "
                     "memory_mb BIGINT NOT NULL, disk_mb BIGINT NOT NULL, cpus DOUBLE PRECISION NOT NULL, "
                     "port_low INTEGER, port_high INTEGER, cordoned INTEGER NOT NULL, unreachable INTEGER NOT NULL, "
                     "removed INTEGER NOT NULL, unreachable_since TEXT, created_at TEXT NOT NULL, "
                     "updated_at TEXT NOT NULL",
              indexes=(("created", "created_at"),)),
        Table(ALLOCATIONS, "instance_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, port INTEGER, "
                           "memory_mb BIGINT NOT NULL, disk_mb BIGINT NOT NULL, cpus DOUBLE PRECISION NOT NULL",
              indexes=(("node", "node_id"),)),
    )
    topics = frozenset({Node.Registered.TOPIC, Node.Reregistered.TOPIC, Node.Cordoned.TOPIC, Node.Uncordoned.TOPIC,
                        Node.BecameUnreachable.TOPIC, Node.Recovered.TOPIC, Node.Allocated.TOPIC,
                        Node.Released.TOPIC, Node.Removed.TOPIC, Instance.Placed.TOPIC})

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        at, node_id = iso(event.timestamp), str(event.originator_id)
        nodes, allocations = t[NODES], t[ALLOCATIONS]
        if isinstance(event, (Node.Registered, Node.Reregistered)):
            values = (event.agent_url, event.public_host, event.memory_mb, event.disk_mb, event.cpus,
                      event.port_low, event.port_high)
            if isinstance(event, Node.Registered):
                cur.execute(f"INSERT INTO {nodes} (id, name, agent_url, public_host, memory_mb, disk_mb, cpus, "
                            "port_low, port_high, cordoned, unreachable, removed, created_at, updated_at) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 0, 0, 0, %s, %s)",
                            (node_id, event.name, *values, at, at))
            else:
                cur.execute(f"UPDATE {nodes} SET agent_url = %s, public_host = %s, memory_mb = %s, disk_mb = %s, "
                            "cpus = %s, port_low = %s, port_high = %s, cordoned = 0, unreachable = 0, removed = 0, "
                            "unreachable_since = NULL, updated_at = %s WHERE id = %s", (*values, at, node_id))
            return
        flags = {Node.Cordoned: "cordoned = 1", Node.Uncordoned: "cordoned = 0",
                 Node.BecameUnreachable: "unreachable = 1, unreachable_since = %s" ,
                 Node.Recovered: "unreachable = 0, unreachable_since = NULL", Node.Removed: "removed = 1"}
        if type(event) in flags:
            params: tuple = (at,) if isinstance(event, Node.BecameUnreachable) else ()
            cur.execute(f"UPDATE {nodes} SET {flags[type(event)]}, updated_at = %s WHERE id = %s",
                        (*params, at, node_id))
            return
        if isinstance(event, Node.Allocated):
            cur.execute(f"INSERT INTO {allocations} (instance_id, node_id, port, memory_mb, disk_mb, cpus) "
                        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (instance_id) DO UPDATE SET "
                        "memory_mb = excluded.memory_mb, disk_mb = excluded.disk_mb, cpus = excluded.cpus "
                        f"WHERE {allocations}.node_id = excluded.node_id",
                        (str(event.instance_id), node_id, event.port, event.memory_mb, event.disk_mb, event.cpus))
        elif isinstance(event, Node.Released):
            cur.execute(f"DELETE FROM {allocations} WHERE instance_id = %s AND node_id = %s",
                        (str(event.instance_id), node_id))
        elif isinstance(event, Instance.Placed):
            # Where the instance lives is its own word (a move reserves room on the target before it moves).
            cur.execute(f"INSERT INTO {allocations} (instance_id, node_id, port, memory_mb, disk_mb, cpus) "
                        "VALUES (%s, %s, %s, 0, 0, 0) ON CONFLICT (instance_id) DO UPDATE SET "
                        "node_id = excluded.node_id, port = excluded.port",
                        (node_id, str(event.node_id), event.port))


def status_of(row: dict[str, Any]) -> str:
    if row["unreachable"]:
        return "unreachable"
    return "cordoned" if row["cordoned"] else "ready"


def _row(r: dict[str, Any]) -> dict[str, Any]:
    ports = f"{r['port_low']}-{r['port_high']}" if r["port_low"] is not None else "auto"
    return {
        "id": r["id"], "name": r["name"], "status": status_of(r), "agent_url": r["agent_url"],
        "public_host": r["public_host"], "port_range": ports, "cordoned": bool(r["cordoned"]),
        "capacity": {"memory_mb": int(r["memory_mb"]), "disk_mb": int(r["disk_mb"]), "cpus": float(r["cpus"])},
        "unreachable_since": r["unreachable_since"], "created_at": r["created_at"], "updated_at": r["updated_at"],
    }


def _with_usage(db: Database, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not rows:
        return []
    usage = {r["node_id"]: r for r in db.query(
        f"SELECT a.node_id, COUNT(*) AS n, SUM(a.memory_mb) AS memory_mb, SUM(a.disk_mb) AS disk_mb, "
        f"SUM(a.cpus) AS cpus FROM {ALLOCATIONS} a GROUP BY a.node_id")}
    out = []
    for r in rows:
        item, u = _row(r), usage.get(r["id"])
        item["instances"] = int(u["n"]) if u else 0
        item["allocated"] = {"memory_mb": int(u["memory_mb"] or 0) if u else 0,
                             "disk_mb": int(u["disk_mb"] or 0) if u else 0,
                             "cpus": float(u["cpus"] or 0) if u else 0.0,
                             "ports": int(u["n"]) if u and r["port_low"] is not None else 0}
        out.append(item)
    return out


def list_nodes(db: Database, limit: int = 500, after: After = None) -> list[dict[str, Any]]:
    """The nodes not removed, newest first, a page at a time, with what is allocated on each."""
    return _with_usage(db, newest_first(db, NODES, "removed = 0", [], limit, after))


def get(db: Database, node_id: str) -> dict[str, Any] | None:
    rows = db.query(f"SELECT * FROM {NODES} WHERE id = %s", (node_id,))
    return _with_usage(db, rows)[0] if rows else None


def all_nodes(db: Database) -> list[dict[str, Any]]:
    return [_row(r) for r in db.query(f"SELECT * FROM {NODES} WHERE removed = 0 ORDER BY name")]


def placement_of(db: Database, instance_id: str) -> dict[str, Any] | None:
    """The instance's node (id, name, status, public host) and port; None if it was never placed."""
    rows = db.query(f"SELECT a.node_id, a.port, n.name, n.public_host, n.unreachable, n.cordoned "
                    f"FROM {ALLOCATIONS} a JOIN {NODES} n ON n.id = a.node_id WHERE a.instance_id = %s",
                    (instance_id,))
    if not rows:
        return None
    r = rows[0]
    return {"node_id": r["node_id"], "port": r["port"], "node": r["name"], "public_host": r["public_host"],
            "node_status": "unreachable" if r["unreachable"] else ("cordoned" if r["cordoned"] else "ready")}


def placements(db: Database, instance_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not instance_ids:
        return {}
    marks = ", ".join(["%s"] * len(instance_ids))
    rows = db.query(f"SELECT a.instance_id, a.node_id, a.port, n.name, n.unreachable FROM {ALLOCATIONS} a "
                    f"JOIN {NODES} n ON n.id = a.node_id WHERE a.instance_id IN ({marks})", instance_ids)
    return {r["instance_id"]: {"node_id": r["node_id"], "node": r["name"], "port": r["port"],
                               "unreachable": bool(r["unreachable"])} for r in rows}


def instances_on(db: Database, node_id: str) -> list[str]:
    return [r["instance_id"] for r in db.query(f"SELECT instance_id FROM {ALLOCATIONS} WHERE node_id = %s",
                                               (node_id,))]


def unreachable_instances(db: Database) -> list[str]:
    return [r["instance_id"] for r in db.query(
        f"SELECT a.instance_id FROM {ALLOCATIONS} a JOIN {NODES} n ON n.id = a.node_id WHERE n.unreachable = 1")]
