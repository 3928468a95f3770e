"""Nodes, pure: capacity, ports, spreading, cordon and health, removal only when empty."""

from __future__ import annotations

import contextlib
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import DomainError
from domain.node import (
    Need,
    NoCapacityError,
    Node,
    NodeNotEmptyError,
    NodeRuleError,
    PortClaim,
    choose_node,
    parse_port_range,
)

SMALL = Need(memory_mb=1024, disk_mb=1000, cpus=1.0)


def node(name: str, memory_mb: int = 2048, ports: tuple[int, int] | None = (30000, 30001)) -> Node:
    return Node(name=name, agent_url=f"http://{name}:8100", secret="sealed", public_host=name, memory_mb=memory_mb,
                disk_mb=100_000, cpus=4, port_low=ports[0] if ports else None, port_high=ports[1] if ports else None)


def test_port_ranges_parse_and_refuse_nonsense() -> None:
    assert parse_port_range("30000-30999") == (30000, 30999)
    assert parse_port_range("auto") is None and parse_port_range(None) is None
    for bad in ("x", "30999-30000", "80-90", "30000-70000"):
        with pytest.raises(NodeRuleError):
            parse_port_range(bad)


def test_a_node_takes_what_fits_and_no_more() -> None:
    n = node("a")
    first, second, third = uuid4(), uuid4(), uuid4()
    n.allocate(first, n.free_port(0), SMALL)
    n.allocate(first, 30000, SMALL)  # idempotent for the same instance
    n.allocate(second, n.free_port(0), SMALL)
    assert n.used_ports == {30000, 30001} and n.allocated()["memory_mb"] == 2048
    with pytest.raises(NoCapacityError):
        n.allocate(third, 30000, Need(0, 0, 0))  # the port is taken (and the range is full)
    assert n.release(first) and not n.release(first)
    n.allocate(third, n.free_port(1), SMALL)
    assert n.allocations[str(third)]["port"] == 30000


def test_placement_spreads_skips_cordoned_and_unreachable_and_refuses_when_full() -> None:
    a, b, c = node("a"), node("b"), node("c")
    c.cordon()
    picked = []
    for _ in range(4):
        chosen = choose_node([a, b, c], SMALL)
        chosen.allocate(uuid4(), chosen.free_port(0), SMALL)
        picked.append(chosen.name)
    assert sorted(picked) == ["a", "a", "b", "b"]
    with pytest.raises(NoCapacityError):
        choose_node([a, b, c], SMALL)
    c.uncordon()
    assert c.mark_unreachable(None) and not c.mark_unreachable(None)
    with pytest.raises(NoCapacityError):
        choose_node([a, b, c], SMALL)
    assert c.mark_recovered(["x"]) and not c.mark_recovered([])
    assert choose_node([a, b, c], SMALL) is c


def test_removal_only_when_empty_and_a_removed_name_comes_back() -> None:
    n = node("a")
    instance = uuid4()
    n.allocate(instance, 30000, SMALL)
    with pytest.raises(NodeNotEmptyError):
        n.remove()
    n.release(instance)
    n.remove()
    assert not n.schedulable
    n.reregister("http://a:1", "s", "a", 1, 1, 1, 30000, 30000)
    assert n.schedulable and n.memory_mb == 1


def test_a_port_claim_is_one_instance_at_a_time() -> None:
    one, two = uuid4(), uuid4()
    claim = PortClaim(node_id=uuid4(), port=30000, instance_id=one)
    with pytest.raises(NoCapacityError):
        claim.claim(two)
    assert not claim.release(two) and claim.release(one)
    claim.claim(two)
    assert claim.instance_id == two


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["alloc", "release"]), st.integers(0, 7), st.integers(0, 3000),
                          st.integers(0, 99)), max_size=40))
def test_no_sequence_of_placements_overbooks_or_shares_a_port(steps: list[tuple[str, int, int, int]]) -> None:
    n = node("a", memory_mb=4096, ports=(30000, 30004))
    ids = [uuid4() for _ in range(8)]
    for action, who, memory, offset in steps:
        if action == "release":
            n.release(ids[who])
            continue
        with contextlib.suppress(DomainError):
            n.allocate(ids[who], n.free_port(offset), Need(memory, 10, 0.5))
        assert n.allocated()["memory_mb"] <= n.memory_mb
        ports = [a["port"] for a in n.allocations.values()]
        assert len(ports) == len(set(ports)) and all(30000 <= p <= 30004 for p in ports)
    copy = None  # replaying the stream rebuilds the same state
    for e in n.collect_events():
        copy = e.mutate(copy)
    assert copy is not None and copy.allocations == n.allocations
