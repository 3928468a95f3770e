"""The reconciler's pure core: (desired, observed) -> findings and proposed repairs.

Level-triggered: the controller gathers the whole desired state (from the log) and
the whole observed state (from the driver) on every pass and hands both to `plan()`.
Nothing here remembers earlier passes; deduplication of findings and repairs is the
controller's business (see `domain.repair`).

Levels (`LEVELS`): 1 is safe and the only level that ever runs (`EXECUTABLE`);
2 and 3 are proposed and recorded, never executed.

The billing guard (`blocked_by`) is part of planning: a repair that would make a
suspended instance running or reachable is proposed with `blocked_by =
"billing_suspended"` and the controller records it as skipped.

Ownership: every record ZLH creates at the edge carries its instance's mark, and
the observed state says which instance each record's mark names (None: not ZLH's).
A record at one of our names without our mark is a conflict, reported and left
alone; a record is an orphan only when its mark names an instance that is no
longer live. Records of others are never proposed for any change. Containers
(the proxmox driver) are observed the same way: only those tagged `zlh`; one whose
description names an instance that is not live is an orphan, one tagged but naming
no instance is reported and left alone, and untagged ones are never seen at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

SRV_PREFIX = "_minecraft._tcp."

#: Every repair kind and its level.
LEVELS: dict[str, int] = {
    "clear_stale_operation_lock": 1,
    "edge_republish": 1,
    "restart_instance": 2,
    "remove_orphan": 2,
    "recreate_instance": 3,
}

#: The code allow-list: the only repair kinds a worker may execute. Level 2 and 3 are not here,
#: so no setting can make them run.
EXECUTABLE: frozenset[str] = frozenset({"clear_stale_operation_lock", "edge_republish"})

#: The code half of the Level 2 key: Level 2 kinds a worker may run when `ZLH_CONTROLLER_LEVEL2` is on.
#: Empty: both keys are required, and this one is not cut yet.
LEVEL2_EXECUTABLE: frozenset[str] = frozenset()


def executable(kind: str, level2_enabled: bool = False) -> bool:
    """Whether a repair of `kind` may ever be executed: Level 1, or Level 2 with both keys turned."""
    return kind in EXECUTABLE or (level2_enabled and kind in LEVEL2_EXECUTABLE)


#: Repairs that would make an instance running or reachable: never for a billing-suspended one.
REVIVING: frozenset[str] = frozenset({"edge_republish", "restart_instance", "recreate_instance"})

#: `DesiredInstance.host` when the driver could not say where the instance is (its container is gone, say):
#: its proxy entry's address is then not judged.
UNKNOWN_HOST = "?"

#: Statuses whose instance has a port and should be published at the edge (game instances).
PUBLISHED_STATUSES = frozenset({"running", "stopped"})


@dataclass(frozen=True)
class DesiredInstance:
    """What the log says about one live instance."""

    id: UUID
    owner_id: UUID
    kind: str
    status: str
    edge_name: str
    port: int | None
    pending_operation_id: UUID | None
    billing_suspended: bool = False
    #: Where players reach the instance's node (its proxy entry points at host:port); None: the plan's default.
    host: str | None = None


@dataclass(frozen=True)
class PendingOperation:
    """A running operation and when its worker last reported (an event or a heartbeat)."""

    id: UUID
    instance_id: UUID
    kind: str
    last_report_at: datetime
    step: str | None = None


@dataclass(frozen=True)
class Observed:
    """What the infrastructure holds: SRV records (name -> port), proxy entries (server -> address),
    the instance each record's ownership mark names (missing or None: not ZLH's), live processes, and
    which instances have a data directory."""

    dns: dict[str, int] = field(default_factory=dict)
    proxy: dict[str, str] = field(default_factory=dict)
    processes: frozenset[UUID] = frozenset()
    directories: frozenset[UUID] = frozenset()
    dns_owners: dict[str, UUID | None] = field(default_factory=dict)
    proxy_owners: dict[str, UUID | None] = field(default_factory=dict)
    #: Containers tagged ZLH's (VMID -> the instance their description names; None: names none).
    containers: dict[int, UUID | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """One piece of drift on a target (`instance:ID`, `dns:NAME`, `proxy:SERVER`, `process:ID`)."""

    target: str
    kind: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "detail": self.detail}


@dataclass(frozen=True)
class Proposal:
    """A repair the findings call for. `blocked_by` set means: record it as skipped for that reason."""

    target: str
    kind: str
    instance_id: UUID | None
    params: dict[str, Any]
    blocked_by: str | None = None

    @property
    def level(self) -> int:
        return LEVELS[self.kind]


@dataclass(frozen=True)
class Plan:
    findings: tuple[Finding, ...]
    proposals: tuple[Proposal, ...]

    def findings_by_target(self) -> dict[str, list[Finding]]:
        out: dict[str, list[Finding]] = {}
        for f in self.findings:
            out.setdefault(f.target, []).append(f)
        return out

    @property
    def actionable(self) -> tuple[Proposal, ...]:
        """Proposals no guard blocks."""
        return tuple(p for p in self.proposals if p.blocked_by is None)


def srv_record_name(edge_name: str, zone: str) -> str:
    return f"{SRV_PREFIX}{edge_name}.{zone}".lower()


def instance_target(instance_id: UUID) -> str:
    return f"instance:{instance_id}"


def is_suspended(instance: DesiredInstance) -> bool:
    """The billing guard: suspended by status or by the account's enforcement state."""
    return instance.billing_suspended or instance.status == "suspended"


def guard(kind: str, instance: DesiredInstance | None) -> str | None:
    """Why a repair of `kind` must not act on `instance` now, or None. Checked when a repair is
    proposed and again by the worker right before acting."""
    if instance is not None and kind in REVIVING and is_suspended(instance):
        return "billing_suspended"
    return None


def plan(
    instances: Iterable[DesiredInstance],
    operations: Iterable[PendingOperation],
    observed: Observed,
    *,
    now: datetime,
    stale_after: timedelta,
    zone: str,
    host: str = "127.0.0.1",
) -> Plan:
    """Compare desired with observed state; return the drift found and the repairs it calls for."""
    instances = list(instances)
    findings: list[Finding] = []
    proposals: list[Proposal] = []
    by_id = {i.id: i for i in instances}

    for op in operations:
        instance = by_id.get(op.instance_id)
        if instance is None or instance.pending_operation_id != op.id:
            continue
        age = now - op.last_report_at
        if age >= stale_after:
            target = instance_target(instance.id)
            findings.append(Finding(target, "stale_operation",
                                    f"{op.kind} operation {op.id} silent for {int(age.total_seconds())}s"
                                    f" at step {op.step or 'none'}"))
            proposals.append(Proposal(target, "clear_stale_operation_lock", instance.id,
                                      {"operation_id": str(op.id)}))

    for instance in instances:
        if instance.pending_operation_id is not None:
            continue  # an operation is at work on it: its own steps decide
        target = instance_target(instance.id)
        found = _instance_drift(instance, observed, host, zone)
        findings.extend(found)
        kinds = {f.kind for f in found}
        if kinds & {"srv_missing", "srv_wrong_port", "proxy_missing", "proxy_wrong"}:
            proposals.append(_guarded(Proposal(target, "edge_republish", instance.id,
                                               {"port": instance.port}), instance))
        if "files_missing" in kinds:
            proposals.append(_guarded(Proposal(target, "recreate_instance", instance.id, {}), instance))
        elif "process_down" in kinds:
            proposals.append(_guarded(Proposal(target, "restart_instance", instance.id, {}), instance))

    for finding in _orphans(instances, observed, zone):
        findings.append(finding)
        proposals.append(Proposal(finding.target, "remove_orphan", None, {"what": finding.kind}))
    findings.extend(unclaimed_containers(observed))

    return Plan(tuple(findings), tuple(proposals))


def _guarded(proposal: Proposal, instance: DesiredInstance) -> Proposal:
    reason = guard(proposal.kind, instance)
    if reason is None:
        return proposal
    return Proposal(proposal.target, proposal.kind, proposal.instance_id, proposal.params, reason)


def _instance_drift(instance: DesiredInstance, observed: Observed, host: str, zone: str) -> list[Finding]:
    target = instance_target(instance.id)
    out: list[Finding] = []
    if instance.port is None or instance.status not in PUBLISHED_STATUSES | {"suspended"}:
        return out
    if instance.id not in observed.directories:
        out.append(Finding(target, "files_missing", "the instance's data directory is gone"))
    if instance.status == "running" and instance.id not in observed.processes:
        out.append(Finding(target, "process_down", "running in the log, no live process"))
    if instance.kind != "game":
        return out
    name = srv_record_name(instance.edge_name, zone)
    port = observed.dns.get(name)
    if port is None:
        out.append(Finding(target, "srv_missing", f"no SRV record {name}"))
    elif observed.dns_owners.get(name) != instance.id:
        out.append(Finding(target, "srv_conflict", f"SRV {name} exists but is not this instance's: left alone"))
    elif port != instance.port:
        out.append(Finding(target, "srv_wrong_port", f"SRV {name} points at port {port}, not {instance.port}"))
    address = f"{instance.host or host}:{instance.port}"
    entry = observed.proxy.get(instance.edge_name)
    if entry is None:
        out.append(Finding(target, "proxy_missing", f"no proxy entry {instance.edge_name}"))
    elif observed.proxy_owners.get(instance.edge_name) != instance.id:
        out.append(Finding(target, "proxy_conflict",
                           f"proxy entry {instance.edge_name} exists but is not this instance's: left alone"))
    elif entry != address and instance.host != UNKNOWN_HOST:
        out.append(Finding(target, "proxy_wrong", f"proxy {instance.edge_name} -> {entry}, not {address}"))
    return out


def _orphans(instances: list[DesiredInstance], observed: Observed, zone: str) -> list[Finding]:
    """ZLH's edge records and processes whose instance is no longer live (others' records are never orphans)."""
    live_ids = {i.id for i in instances}
    out = [Finding(f"dns:{name}", "orphan_dns", f"SRV record {name} belongs to no live instance")
           for name in sorted(observed.dns)
           if observed.dns_owners.get(name) is not None and observed.dns_owners[name] not in live_ids]
    out += [Finding(f"proxy:{server}", "orphan_proxy", f"proxy entry {server} belongs to no live instance")
            for server in sorted(observed.proxy)
            if observed.proxy_owners.get(server) is not None and observed.proxy_owners[server] not in live_ids]
    out += [Finding(f"process:{pid}", "orphan_process", f"a process for {pid}, which is not a live instance")
            for pid in sorted(observed.processes, key=str) if pid not in live_ids]
    out += [Finding(f"container:{vmid}", "orphan_container",
                    f"container {vmid} is tagged zlh for {owner}, which is not a live instance")
            for vmid, owner in sorted(observed.containers.items()) if owner is not None and owner not in live_ids]
    return out


def unclaimed_containers(observed: Observed) -> tuple[Finding, ...]:
    """Containers tagged `zlh` whose description names no instance: reported for a human, never acted on."""
    return tuple(Finding(f"container:{vmid}", "container_unclaimed",
                         f"container {vmid} is tagged zlh but its description names no instance: left alone")
                 for vmid, owner in sorted(observed.containers.items()) if owner is None)
