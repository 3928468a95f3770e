"""Use cases for an instance's live stats and disk usage: asked of its node, never stored as events.

The node agent samples each running server every 5 s and keeps 15 minutes of samples in memory
(`services.agent.stats`); here the caller's right to see the instance is checked (404 like every
instance route), then the node is asked. `disk_usage` is the lenient form for the instance's own
page: a node that does not answer gives no figures rather than an error.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from uuid import UUID

from domain.lifecycle import InstanceStatus
from services.lifecycle import NotFoundError, load_instance
from services.ports import DriverError, InstanceDriver, InstanceSpec

log = logging.getLogger(__name__)

#: Statuses in which an instance has files on a node worth asking about.
ON_A_NODE = {InstanceStatus.RUNNING, InstanceStatus.STOPPED, InstanceStatus.FAILED, InstanceStatus.SUSPENDED}


def _spec(app: Any, owner_id: UUID | None, instance_id: UUID) -> tuple[InstanceSpec, InstanceStatus]:
    instance = load_instance(app, instance_id, owner_id)
    if instance.status in (InstanceStatus.DELETED, InstanceStatus.DELETING):
        raise NotFoundError("no such instance")
    return InstanceSpec(instance.id, instance.kind.value, instance.template, instance.edge_name), instance.status


def instance_stats(app: Any, driver: InstanceDriver, owner_id: UUID | None, instance_id: UUID) -> dict[str, Any]:
    """`{"current", "history", "disk_bytes", "disk_quota_bytes", "limits", "limits_enforced", "last_exit"}`.

    `current` is null while the instance is not running (whatever the node last sampled).
    """
    spec, status = _spec(app, owner_id, instance_id)
    if status not in ON_A_NODE:
        return {"current": None, "history": [], "disk_bytes": None, "disk_quota_bytes": None, "limits": None,
                "limits_enforced": None, "last_exit": None}
    stats = driver.stats(spec)
    limits = stats.get("limits") or {}
    return {
        "current": stats.get("current") if status is InstanceStatus.RUNNING else None,
        "history": list(stats.get("history") or []),
        "disk_bytes": stats.get("disk_bytes"),
        "disk_quota_bytes": limits.get("disk_bytes"),
        "limits": limits or None,
        "limits_enforced": stats.get("limits_enforced"),
        "last_exit": stats.get("last_exit"),
    }


def disk_usage(app: Any, driver: InstanceDriver, row: dict[str, Any]) -> dict[str, Any]:
    """`{"disk_bytes", "disk_quota_bytes", "last_exit"}` for an instance's read-model row; nulls when the
    instance is not on a node or the node does not answer (logged)."""
    empty: dict[str, Any] = {"disk_bytes": None, "disk_quota_bytes": None, "last_exit": None}
    if row.get("status") not in {s.value for s in ON_A_NODE}:
        return empty
    spec = InstanceSpec(UUID(row["id"]), row["kind"], row["template"], row.get("edge_name") or "")
    try:
        stats = driver.stats(spec)
    except DriverError as exc:
        log.info("no disk figures for %s: %s", row["id"], exc.code)
        return empty
    return {"disk_bytes": stats.get("disk_bytes"), "disk_quota_bytes": (stats.get("limits") or {}).get("disk_bytes"),
            "last_exit": stats.get("last_exit")}


def node_samples(driver: InstanceDriver) -> dict[str, dict[str, Any]]:
    """Instance id -> latest sample of every running server, for /metrics; {} if the node does not answer."""
    try:
        return dict(driver.node_stats())
    except (DriverError, AttributeError) as exc:
        log.info("no instance samples for /metrics: %s", getattr(exc, "code", exc))
        return {}


#: (driver id, monotonic time, answer): the node's limits status, cached a little, as /readyz is polled often.
_LIMITS_CACHE: dict[int, tuple[float, str]] = {}
LIMITS_CACHE_SECONDS = 30.0


def limits_status(driver: Any) -> str | None:
    """What the node agent says of kernel limits (`enforced: …` / `not enforced: <reason>`); None for a driver
    without a health check (the fake); `unknown: …` when the node does not answer."""
    health = getattr(driver, "health", None)
    if health is None:
        return None
    now = time.monotonic()
    cached = _LIMITS_CACHE.get(id(driver))
    if cached is not None and now - cached[0] < LIMITS_CACHE_SECONDS:
        return cached[1]
    try:
        answer = str(health().get("limits") or "unknown: the node agent does not say")
    except DriverError as exc:
        return f"unknown: the node agent did not answer ({exc.code})"
    _LIMITS_CACHE[id(driver)] = (now, answer)
    return answer
