"""Staff alerts for nodes (README "More than one host"): a node unreachable or back, a create with no room."""

from __future__ import annotations

from typing import Any

from domain.node import Node
from domain.operation import Operation

Planned = tuple[str, str, dict[str, Any]]


def node_messages(event: Any) -> list[Planned]:
    """One alert per transition (the aggregate records each once) and per create refused for capacity."""
    if isinstance(event, Node.BecameUnreachable):
        return [("discord", "node_alert", {
            "title": "Node unreachable", "level": "critical",
            "description": "its agent stopped answering; its servers show `unreachable` until it is back",
            "fields": [["Node", str(event.originator_id)], ["Last seen", event.last_seen or "never"]]})]
    if isinstance(event, Node.Recovered):
        return [("discord", "node_alert", {
            "title": "Node back", "level": "info",
            "description": f"its agent answers again, reporting {len(event.processes)} running server(s)",
            "fields": [["Node", str(event.originator_id)]]})]
    if isinstance(event, Operation.Failed) and event.code == "no_capacity":
        return [("discord", "capacity_alert", {
            "title": "No capacity for a new server", "level": "warning",
            "description": "no ready node had room for a create; add or uncordon a node",
            "fields": [["Operation", str(event.originator_id)]]})]
    return []
