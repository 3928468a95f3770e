"""The planner, the repair aggregates and the leadership fencing rule, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from domain.errors import IllegalTransitionError
from domain.reconcile import (
    EXECUTABLE,
    LEVELS,
    DesiredInstance,
    Observed,
    PendingOperation,
    executable,
    guard,
    plan,
    srv_record_name,
)
from domain.repair import ControllerLeadership, Drift, FencedOffError, Repair, RepairStatus
from services.workers.repair_messages import repair_messages

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ZONE = "play.zlh.localhost"
IID = UUID(int=1)


def game(status: str = "running", **kw: object) -> DesiredInstance:
    fields = {"id": IID, "owner_id": UUID(int=2), "kind": "game", "status": status, "edge_name": "mc-00000000",
              "port": 30001, "pending_operation_id": None} | kw
    return DesiredInstance(**fields)  # type: ignore[arg-type]


SRV = srv_record_name("mc-00000000", ZONE)


def healthy() -> Observed:
    return Observed({SRV: 30001}, {"mc-00000000": "127.0.0.1:30001"}, frozenset({IID}), frozenset({IID}),
                    {SRV: IID}, {"mc-00000000": IID})


def findings(instance: DesiredInstance, observed: Observed) -> list[str]:
    result = plan([instance], (), observed, now=NOW, stale_after=timedelta(minutes=15), zone=ZONE)
    return sorted(f.kind for f in result.findings)


def kinds(instance: DesiredInstance, observed: Observed, ops: tuple = ()) -> list[tuple[str, str | None]]:
    result = plan([instance], ops, observed, now=NOW, stale_after=timedelta(minutes=15), host="127.0.0.1",
                  zone=ZONE)
    return sorted((p.kind, p.blocked_by) for p in result.proposals)


def test_healthy_plans_nothing() -> None:
    assert kinds(game(), healthy()) == []


def test_wrong_srv_port_and_missing_proxy_call_for_one_republish() -> None:
    o = healthy()
    broken = Observed({k: 1 for k in o.dns}, {}, o.processes, o.directories, o.dns_owners, {})
    assert findings(game(), broken) == ["proxy_missing", "srv_wrong_port"]
    assert kinds(game(), broken) == [("edge_republish", None)]


def test_a_record_at_our_name_that_is_not_ours_is_a_conflict_left_alone() -> None:
    o = healthy()
    hijacked = Observed(o.dns, o.proxy, o.processes, o.directories, {SRV: None}, {"mc-00000000": UUID(int=77)})
    # The proxy entry carries the mark of an instance that is gone: also an orphan (Level 2, never run).
    assert findings(game(), hijacked) == ["orphan_proxy", "proxy_conflict", "srv_conflict"]
    assert kinds(game(), hijacked) == [("remove_orphan", None)]


def test_only_zlhs_records_of_gone_instances_are_orphans() -> None:
    o = healthy()
    gone, theirs = srv_record_name("gone-11111111", ZONE), srv_record_name("theirs", ZONE)
    extra = Observed({**o.dns, gone: 1, theirs: 2}, {**o.proxy, "gone-11111111": "h:1", "theirs": "h:2"},
                     o.processes, o.directories, {**o.dns_owners, gone: UUID(int=5), theirs: None},
                     {**o.proxy_owners, "gone-11111111": UUID(int=5)})
    assert findings(game(), extra) == ["orphan_dns", "orphan_proxy"]


def test_process_down_is_level2_and_missing_files_level3() -> None:
    o = healthy()
    assert kinds(game(), Observed(o.dns, o.proxy, frozenset(), o.directories)) == [("restart_instance", None)]
    assert kinds(game(), Observed(o.dns, o.proxy, frozenset(), frozenset())) == [("recreate_instance", None)]
    assert LEVELS["restart_instance"] == 2 and LEVELS["recreate_instance"] == 3


def test_suspended_instances_are_never_revived() -> None:
    o = Observed({}, {}, frozenset(), frozenset({IID}))
    assert kinds(game("suspended"), o) == [("edge_republish", "billing_suspended")]
    assert kinds(game(billing_suspended=True), o) == [("edge_republish", "billing_suspended"),
                                                      ("restart_instance", "billing_suspended")]
    assert guard("clear_stale_operation_lock", game("suspended")) is None  # unlocking revives nothing


def test_stale_operation_only_when_silent_long_enough() -> None:
    op = UUID(int=9)
    instance = game("provisioning", port=None, pending_operation_id=op)
    fresh = PendingOperation(op, IID, "create", NOW - timedelta(minutes=14), "start_process")
    stale = PendingOperation(op, IID, "create", NOW - timedelta(minutes=15), "start_process")
    assert kinds(instance, healthy(), (fresh,)) == []
    assert kinds(instance, healthy(), (stale,)) == [("clear_stale_operation_lock", None)]


def test_dev_instances_have_no_edge() -> None:
    o = healthy()
    assert kinds(game(kind="dev"), Observed({}, {}, o.processes, o.directories)) == []


def test_only_level1_is_executable() -> None:
    assert frozenset({"clear_stale_operation_lock", "edge_republish"}) == EXECUTABLE
    assert not executable("restart_instance", level2_enabled=True)
    assert not executable("recreate_instance", level2_enabled=True)


def test_leadership_rejects_an_old_epoch() -> None:
    leadership = ControllerLeadership()
    assert leadership.begin_term("a") == 1
    assert leadership.begin_term("b") == 2
    with pytest.raises(FencedOffError):
        leadership.act(1, 3)
    leadership.act(2, 3)


def test_drift_records_only_changes_and_counts_executions() -> None:
    drift = Drift("instance:x")
    assert drift.record_findings([{"kind": "srv_missing", "detail": "a"}], 1)
    assert not drift.record_findings([{"kind": "srv_missing", "detail": "b"}], 1)
    first = drift.open_repair("edge_republish", queued=True, at=NOW, epoch=1)
    second = drift.open_repair("edge_republish", queued=True, at=NOW + timedelta(minutes=61), epoch=1)
    assert first != second
    assert drift.executed_within("edge_republish", NOW + timedelta(minutes=62)) == 1


def test_repair_state_machine_and_alerts() -> None:
    repair = Repair(sequence=1, kind="edge_republish", level=1, target="instance:x", instance_id=IID,
                    mode="live", epoch=3, findings=[], params={}, expected_versions={})
    with pytest.raises(IllegalTransitionError):
        repair.start("w")  # not queued
    repair.queue(3)
    repair.start("w")
    repair.succeed({"dns": "n"})
    assert repair.status is RepairStatus.SUCCEEDED
    events = repair.collect_events()
    assert [m[1] for e in events for m in repair_messages(e)] == ["repair_alert"]
    escalated = Repair(sequence=2, kind="edge_republish", level=1, target="instance:x", instance_id=IID,
                       mode="live", epoch=3, findings=[], params={}, expected_versions={})
    escalated.escalate("too many", 3)
    alert = [m for e in escalated.collect_events() for m in repair_messages(e)]
    assert alert[0][2]["level"] == "critical"


def test_a_suspended_instance_can_still_be_stopped() -> None:
    """A billing stop that failed leaves the server suspended and maybe running: stop must stay possible."""
    from domain.instance import Instance

    instance = Instance(owner_id=UUID(int=2), kind="game", name="mc", template="minecraft",
                        edge_name="mc-00000000", operation_id=UUID(int=3))
    instance.provision(UUID(int=3), 30001, "127.0.0.1:30001")
    instance.suspend("billing", stop_operation_id=UUID(int=4))
    instance.fail_operation(UUID(int=4), "stop", "stop_failed")
    instance.begin_operation(UUID(int=5), "stop")
    instance.mark_stopped(UUID(int=5))
    assert instance.status.value == "suspended" and instance.pending_operation_id is None
