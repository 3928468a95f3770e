"""Properties of the pure planner: consistent state plans nothing; applying a plan converges; guards hold;
records that are not ZLH's are never proposed for any change."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st

from domain.reconcile import (
    REVIVING,
    DesiredInstance,
    Observed,
    PendingOperation,
    Plan,
    plan,
    srv_record_name,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
STALE = timedelta(minutes=15)
HOST, ZONE = "127.0.0.1", "play.zlh.localhost"
STATUSES = ("provisioning", "running", "stopped", "suspended", "failed", "deleting")


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[DesiredInstance], list[PendingOperation], Observed]:
    n = draw(st.integers(0, 6))
    instances, operations = [], []
    for i in range(n):
        iid = UUID(int=i + 1)
        status = draw(st.sampled_from(STATUSES))
        pending = UUID(int=1000 + i) if status in ("provisioning", "deleting") or draw(st.booleans()) else None
        port = None if status == "provisioning" else 30000 + i
        instances.append(DesiredInstance(iid, UUID(int=99), draw(st.sampled_from(("game", "dev"))), status,
                                         f"srv{i}-{iid.hex[:8]}", port, pending, draw(st.booleans())))
        if pending is not None:
            silent = draw(st.sampled_from((timedelta(0), timedelta(minutes=20))))
            operations.append(PendingOperation(pending, iid, "create", NOW - silent, "allocate_port"))
    consistent = observe_consistent(instances)
    dns, proxy = dict(consistent.dns), dict(consistent.proxy)
    dns_owners, proxy_owners = dict(consistent.dns_owners), dict(consistent.proxy_owners)
    processes, directories = set(consistent.processes), set(consistent.directories)
    for name in draw(st.lists(st.sampled_from(sorted(dns) or ["-"]), max_size=3)):
        dns.pop(name, None)
    for name in draw(st.lists(st.sampled_from(sorted(dns) or ["-"]), max_size=2)):
        if name in dns:
            dns[name] += 1
    for server in draw(st.lists(st.sampled_from(sorted(proxy) or ["-"]), max_size=3)):
        proxy.pop(server, None)
    for iid in draw(st.lists(st.sampled_from(sorted(processes, key=str) or [UUID(int=0)]), max_size=2)):
        processes.discard(iid)
    for iid in draw(st.lists(st.sampled_from(sorted(directories, key=str) or [UUID(int=0)]), max_size=1)):
        directories.discard(iid)
    if draw(st.booleans()):  # ZLH's records of an instance that is gone: orphans
        dns[srv_record_name("ghost-deadbeef", ZONE)] = 1
        proxy["ghost-deadbeef"] = f"{HOST}:1"
        dns_owners[srv_record_name("ghost-deadbeef", ZONE)] = proxy_owners["ghost-deadbeef"] = UUID(int=4242)
        processes.add(UUID(int=4242))
    if draw(st.booleans()):  # someone else's records in the zone and the proxy: never ours to touch
        dns[srv_record_name("theirs", ZONE)] = 25565
        proxy["theirs"] = "10.0.0.9:25565"
        dns_owners[srv_record_name("theirs", ZONE)] = proxy_owners["theirs"] = None
    for name in draw(st.lists(st.sampled_from(sorted(dns) or ["-"]), max_size=1)):  # a hand edit took our name
        if name in dns:
            dns_owners[name] = None
    return instances, operations, Observed(dns, proxy, frozenset(processes), frozenset(directories),
                                           dns_owners, proxy_owners)


def observe_consistent(instances: list[DesiredInstance]) -> Observed:
    """What the infrastructure holds when it matches the log exactly."""
    dns, proxy, processes, directories = {}, {}, set(), set()
    dns_owners: dict[str, UUID | None] = {}
    proxy_owners: dict[str, UUID | None] = {}
    for i in instances:
        if i.port is None or i.status in ("failed", "deleting", "provisioning"):
            continue
        directories.add(i.id)
        if i.status == "running":
            processes.add(i.id)
        if i.kind == "game":
            dns[srv_record_name(i.edge_name, ZONE)] = i.port
            proxy[i.edge_name] = f"{HOST}:{i.port}"
            dns_owners[srv_record_name(i.edge_name, ZONE)] = proxy_owners[i.edge_name] = i.id
    return Observed(dns, proxy, frozenset(processes), frozenset(directories), dns_owners, proxy_owners)


def run(instances: list[DesiredInstance], operations: list[PendingOperation], observed: Observed) -> Plan:
    return plan(instances, operations, observed, now=NOW, stale_after=STALE, host=HOST, zone=ZONE)


def apply(result: Plan, instances: list[DesiredInstance], operations: list[PendingOperation],
          observed: Observed) -> tuple[list[DesiredInstance], list[PendingOperation], Observed]:
    """A model of each repair's effect (Level 2 and 3 included, to check the planner's own logic)."""
    by_id = {i.id: i for i in instances}
    dns, proxy = dict(observed.dns), dict(observed.proxy)
    dns_owners, proxy_owners = dict(observed.dns_owners), dict(observed.proxy_owners)
    processes, directories = set(observed.processes), set(observed.directories)
    ops = list(operations)
    for p in result.actionable:
        i = by_id.get(p.instance_id) if p.instance_id else None
        if p.kind == "edge_republish":
            assert i is not None and i.port is not None
            name = srv_record_name(i.edge_name, ZONE)
            if dns_owners.get(name, i.id) == i.id:  # the providers refuse to change a record that is not ours
                dns[name], dns_owners[name] = i.port, i.id
            if proxy_owners.get(i.edge_name, i.id) == i.id:
                proxy[i.edge_name], proxy_owners[i.edge_name] = f"{HOST}:{i.port}", i.id
        elif p.kind == "restart_instance":
            processes.add(i.id)
        elif p.kind == "recreate_instance":
            directories.add(i.id)
            if i.status == "running":
                processes.add(i.id)
        elif p.kind == "remove_orphan":
            kind, _, key = p.target.partition(":")
            if kind == "dns":
                dns.pop(key)
                dns_owners.pop(key)
            elif kind == "proxy":
                proxy.pop(key)
                proxy_owners.pop(key)
            else:
                processes.discard(UUID(key))
        elif p.kind == "clear_stale_operation_lock":
            op_id = UUID(p.params["operation_id"])
            ops = [o for o in ops if o.id != op_id]
            by_id[i.id] = replace(i, pending_operation_id=None,
                                  status="failed" if i.status == "provisioning" else i.status)
    return list(by_id.values()), ops, Observed(dns, proxy, frozenset(processes), frozenset(directories),
                                               dns_owners, proxy_owners)


@given(worlds())
def test_a_consistent_world_plans_nothing_but_stale_operations(world: tuple) -> None:
    instances, operations, _ = world
    result = run(instances, operations, observe_consistent(instances))
    assert {p.kind for p in result.proposals} <= {"clear_stale_operation_lock"}


@given(worlds())
def test_replanning_after_applying_proposes_nothing_again(world: tuple) -> None:
    instances, operations, observed = world
    first = run(instances, operations, observed)
    instances2, operations2, observed2 = apply(first, instances, operations, observed)
    second = run(instances2, operations2, observed2)
    done = {(p.target, p.kind) for p in first.actionable}
    assert not done & {(p.target, p.kind) for p in second.actionable}
    # Clearing a stale lock can uncover drift on that instance; one more round settles everything.
    third = run(*apply(second, instances2, operations2, observed2))
    assert third.actionable == ()


@given(worlds())
def test_nothing_revives_a_suspended_instance(world: tuple) -> None:
    instances, operations, observed = world
    suspended = {i.id for i in instances if i.billing_suspended or i.status == "suspended"}
    for p in run(instances, operations, observed).proposals:
        if p.instance_id in suspended and p.kind in REVIVING:
            assert p.blocked_by == "billing_suspended"
        if p.blocked_by is not None:
            assert p.instance_id in suspended


@given(worlds())
def test_records_that_are_not_zlhs_are_never_touched(world: tuple) -> None:
    """A foreign record is never an orphan, and one at our name is a conflict that nothing republishes over."""
    instances, operations, observed = world
    result = run(instances, operations, observed)
    foreign_dns = {n for n, owner in observed.dns_owners.items() if owner is None}
    foreign_proxy = {s for s, owner in observed.proxy_owners.items() if owner is None}
    targets = {p.target for p in result.proposals}
    assert not targets & ({f"dns:{n}" for n in foreign_dns} | {f"proxy:{s}" for s in foreign_proxy})
    by_id = {i.id: i for i in instances}
    for f in result.findings:
        if f.kind in ("srv_conflict", "proxy_conflict"):
            instance = by_id[UUID(f.target.removeprefix("instance:"))]
            assert srv_record_name(instance.edge_name, ZONE) in foreign_dns or instance.edge_name in foreign_proxy


@given(worlds())
def test_planning_is_pure(world: tuple) -> None:
    assert run(*world) == run(*world)
