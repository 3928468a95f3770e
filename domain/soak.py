"""The controller's soak report: what dry-run mode saw, and what live mode would have done.

The controller stays in dry-run "for a soak" before Level 1 repairs go live; this report says
what the soak showed, from the repairs it recorded since a moment (pure: the caller hands in
the repairs and when each instance was suspended).

Per repair kind: how many were proposed; how many *would have run* in live mode (an executable
kind, Level 1, that no guard blocked: still open, or later skipped only because the drift
resolved itself); of those, how many the hourly limit would have escalated instead
(`MAX_EXECUTED_PER_HOUR` per target and kind, counted as the controller does); how many were
skipped and why; and, in live mode, how they ran. Then the targets that drifted most, and the
verdict an operator needs before switching to live: how many Level 1 repairs would have run,
and whether any of them would have touched a server that was suspended (by billing or by its
status) when the repair was proposed. "None touched a suspended server" is checked against
those suspension intervals, not assumed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from domain.reconcile import EXECUTABLE, LEVELS
from domain.repair import MAX_EXECUTED_PER_HOUR

#: Skip reasons that are not guards: the drift went away before anything ran.
NOT_A_GUARD = frozenset({"resolved"})
Interval = tuple[datetime, datetime | None]


@dataclass(frozen=True)
class RepairRecord:
    id: str
    kind: str
    level: int
    target: str
    instance_id: str | None
    status: str
    reason: str | None
    mode: str
    created_at: datetime


def would_run(r: RepairRecord) -> bool:
    """Live mode would have executed it: an executable kind that no guard blocked and no limit escalated."""
    if r.kind not in EXECUTABLE:
        return False
    if r.status == "skipped":
        return r.reason in NOT_A_GUARD
    return r.status != "escalated"


def suspended_at(intervals: list[Interval], at: datetime) -> bool:
    return any(start <= at and (end is None or at < end) for start, end in intervals)


def _over_limit(records: list[RepairRecord]) -> set[str]:
    """Ids of would-run repairs that the hourly limit would have escalated (per target and kind)."""
    over: set[str] = set()
    by_key: dict[tuple[str, str], list[RepairRecord]] = defaultdict(list)
    for r in records:
        by_key[(r.target, r.kind)].append(r)
    for group in by_key.values():
        ran: list[datetime] = []
        for r in sorted(group, key=lambda x: x.created_at):
            recent = [t for t in ran if r.created_at - t < timedelta(hours=1)]
            if len(recent) >= MAX_EXECUTED_PER_HOUR:
                over.add(r.id)
            else:
                ran.append(r.created_at)
    return over


def soak_report(repairs: list[RepairRecord], suspended: Mapping[str, list[Interval]], since: datetime,
                until: datetime, mode: str, drift_changes: Mapping[str, int] | None = None,
                top: int = 10) -> dict[str, Any]:
    """The report (see the module docstring); `drift_changes` counts finding-set changes per target, if known."""
    candidates = [r for r in repairs if would_run(r)]
    escalate = _over_limit(candidates)
    kinds: dict[str, dict[str, Any]] = {}
    for kind in sorted({r.kind for r in repairs} | set(EXECUTABLE)):
        kinds[kind] = {"kind": kind, "level": LEVELS.get(kind, 0), "executable": kind in EXECUTABLE,
                       "proposed": 0, "would_run": 0, "would_escalate": 0, "skipped": {}, "escalated": 0,
                       "statuses": {}}
    touched: list[dict[str, Any]] = []
    for r in repairs:
        k = kinds[r.kind]
        k["proposed"] += 1
        k["statuses"][r.status] = k["statuses"].get(r.status, 0) + 1
        if r.status == "skipped":
            reason = r.reason or "unknown"
            k["skipped"][reason] = k["skipped"].get(reason, 0) + 1
        if r.status == "escalated":
            k["escalated"] += 1
        if would_run(r):
            if r.id in escalate:
                k["would_escalate"] += 1
                continue
            k["would_run"] += 1
            if r.instance_id and suspended_at(list(suspended.get(r.instance_id, [])), r.created_at):
                touched.append({"id": r.id, "kind": r.kind, "target": r.target,
                                "created_at": r.created_at.isoformat()})
    repairs_per_target: Counter[str] = Counter(r.target for r in repairs)
    changes = dict(drift_changes or {})
    ranked = sorted(set(repairs_per_target) | set(changes),
                    key=lambda t: (-changes.get(t, 0), -repairs_per_target[t], t))[:top]
    targets = [{"target": t, "drift_changes": changes.get(t, 0), "repairs": repairs_per_target[t],
                "kinds": dict(Counter(r.kind for r in repairs if r.target == t))} for t in ranked]
    level1 = sum(k["would_run"] for k in kinds.values() if k["level"] == 1)
    held = sum(k["skipped"].get("billing_suspended", 0) for k in kinds.values())
    suffix = f" ({held} held back by the billing guard)" if held else ""
    if touched:
        verdict = (f"{level1} Level 1 repairs would have run; {len(touched)} of them would have touched a "
                   f"suspended server: do not go live before this is understood")
    else:
        verdict = f"{level1} Level 1 repairs would have run; none touched a suspended server{suffix}"
    return {"since": since.isoformat(), "until": until.isoformat(), "mode": mode, "repairs": len(repairs),
            "would_run": level1, "kinds": list(kinds.values()), "targets": targets,
            "touched_suspended": touched, "held_by_guard": held, "verdict": verdict}
