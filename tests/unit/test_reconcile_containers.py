"""Planning over containers (the proxmox driver): orphans by tag only, unclaimed ones reported, never acted on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from domain.reconcile import UNKNOWN_HOST, DesiredInstance, Observed, plan

IID = UUID(int=1)
ZONE = "play.zlh.localhost"
SRV = f"_minecraft._tcp.mc-00000001.{ZONE}"


def instance(**kw: object) -> DesiredInstance:
    values: dict[str, object] = dict(id=IID, owner_id=UUID(int=9), kind="game", status="running",
                                     edge_name="mc-00000001", port=30001, pending_operation_id=None,
                                     host="10.0.0.5")
    values.update(kw)
    return DesiredInstance(**values)  # type: ignore[arg-type]


def observed(**kw: object) -> Observed:
    values: dict[str, object] = dict(dns={SRV: 30001}, proxy={"mc-00000001": "10.0.0.5:30001"},
                                     processes=frozenset({IID}), directories=frozenset({IID}),
                                     dns_owners={SRV: IID}, proxy_owners={"mc-00000001": IID},
                                     containers={10001: IID})
    values.update(kw)
    return Observed(**values)  # type: ignore[arg-type]


def planned(desired: list[DesiredInstance], seen: Observed):  # type: ignore[no-untyped-def]
    return plan(desired, [], seen, now=datetime(2026, 1, 1, tzinfo=UTC), stale_after=timedelta(minutes=15),
                zone=ZONE)


def test_our_container_of_a_live_instance_is_no_drift() -> None:
    result = planned([instance()], observed())
    assert result.findings == () and result.proposals == ()


def test_a_tagged_container_of_a_gone_instance_is_an_orphan_proposed_at_level_2() -> None:
    gone = UUID(int=2)
    result = planned([instance()], observed(containers={10001: IID, 10002: gone, 10003: None}))
    assert [(f.target, f.kind) for f in result.findings] == [
        ("container:10002", "orphan_container"), ("container:10003", "container_unclaimed")]
    assert [(p.target, p.kind, p.level) for p in result.proposals] == [("container:10002", "remove_orphan", 2)]


def test_an_unknown_host_leaves_the_proxy_address_unjudged() -> None:
    result = planned([instance(host=UNKNOWN_HOST)], observed())
    assert result.findings == ()
    moved = planned([instance(host="10.0.0.6")], observed())
    assert [f.kind for f in moved.findings] == ["proxy_wrong"]


def test_a_missing_container_is_missing_files_and_a_suspended_instance_is_not_revived() -> None:
    gone = observed(processes=frozenset(), directories=frozenset(), containers={})
    assert [p.kind for p in planned([instance()], gone).proposals] == ["recreate_instance"]
    suspended = planned([instance(billing_suspended=True)], observed(dns={}, dns_owners={}))
    assert [(p.kind, p.blocked_by) for p in suspended.proposals] == [("edge_republish", "billing_suspended")]
