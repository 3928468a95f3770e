"""The edge as the workers use it (`services.edge.Edge`): SRV record and proxy entry per game server.

Run over the in-memory fakes and the local files; the providers' own contracts (ownership, idempotence,
Cloudflare, Velocity) are tests/contract/test_dns_contract.py and test_proxy_contract.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import uuid4

import pytest

from services.adapters.edge_files import LocalEdge
from services.adapters.fake_edge import FakeDns, FakeProxy
from services.edge import Edge
from services.ports import DriverError, InstanceSpec, ownership_comment

ZONE = "play.zlh.localhost"
HOST = "203.0.113.7"


def make_spec(kind: str = "game", name: str = "alpha") -> InstanceSpec:
    iid = uuid4()
    return InstanceSpec(iid, kind, "minecraft" if kind == "game" else "python", f"{name}-{iid.hex[:8]}")


@pytest.fixture(params=["fake", "local"])
def edge(request: pytest.FixtureRequest, tmp_path: Path) -> Edge:
    if request.param == "fake":
        return Edge(FakeDns(), FakeProxy(), ZONE)
    local = LocalEdge(tmp_path / "edge")
    return Edge(local, local, ZONE)


def test_publish_twice_leaves_one_record_and_one_entry(edge: Edge) -> None:
    spec = make_spec()
    name = f"_minecraft._tcp.{spec.edge_name}.{ZONE}"
    record = edge.publish_dns(spec, HOST, 31000)
    assert edge.publish_dns(spec, HOST, 31000) == record
    assert record["type"] == "SRV" and record["name"] == name
    assert record["data"]["port"] == 31000 and record["data"]["target"] == HOST
    assert record["comment"] == ownership_comment(spec.instance_id)
    assert edge.dns.list_records() == [record]
    assert edge.publish_proxy(spec, HOST, 31000) == f"{HOST}:31000"
    assert edge.publish_proxy(spec, HOST, 31000) == f"{HOST}:31000"
    assert edge.proxy.list_servers() == {spec.edge_name: f"{HOST}:31000"}
    assert edge.proxy.list_forced_hosts() == {f"{spec.edge_name}.{ZONE}": [spec.edge_name]}
    observed = edge.observe()
    assert observed.srv_ports == {name: 31000} and observed.srv_owners == {name: spec.instance_id}
    assert observed.proxy_owners == {spec.edge_name: spec.instance_id}


def test_republish_on_a_new_port_keeps_the_record(edge: Edge) -> None:
    spec = make_spec()
    first = edge.publish_dns(spec, HOST, 31000)
    second = edge.publish_dns(spec, HOST, 31001)
    assert second["id"] == first["id"] and second["data"]["port"] == 31001
    assert edge.dns.list_records() == [second]


def test_dev_containers_have_no_edge(edge: Edge) -> None:
    spec = make_spec("dev")
    assert edge.publish_dns(spec, HOST, 31000) == {}
    assert edge.publish_proxy(spec, HOST, 31000) == ""
    edge.remove_dns(spec)
    edge.remove_proxy(spec)
    assert edge.dns.list_records() == [] and edge.proxy.list_servers() == {}


def test_two_customers_with_one_name_do_not_collide(edge: Edge) -> None:
    a, b = make_spec(name="lobby"), make_spec(name="lobby")
    for spec, port in ((a, 31000), (b, 31001)):
        edge.publish_dns(spec, HOST, port)
        edge.publish_proxy(spec, HOST, port)
    assert len(edge.dns.list_records()) == 2 and len(edge.proxy.list_servers()) == 2


def test_removing_twice_is_fine_and_removes_only_ours(edge: Edge) -> None:
    spec, other = make_spec(), make_spec()
    edge.publish_dns(other, HOST, 31005)
    edge.publish_dns(spec, HOST, 31000)
    edge.publish_proxy(spec, HOST, 31000)
    for _ in range(2):
        edge.remove_dns(spec)
        edge.remove_proxy(spec)
    assert [r["comment"] for r in edge.dns.list_records()] == [ownership_comment(other.instance_id)]
    assert edge.proxy.list_servers() == {}


def test_a_record_someone_else_made_at_our_name_is_refused(edge: Edge) -> None:
    spec = make_spec()
    squatter = make_spec()
    edge.dns.upsert_srv(edge.srv_name(spec), HOST, 25565, ownership_comment(squatter.instance_id))
    with pytest.raises(DriverError) as info:
        edge.publish_dns(spec, HOST, 31000)
    assert info.value.code == "record_not_ours"
    assert edge.observe().srv_owners == {edge.srv_name(spec): squatter.instance_id}


@pytest.mark.parametrize(("file", "content"), [("dns.json", "[{ not json"), ("proxy.json", '["a list"]')])
def test_corrupt_local_files_are_reported_and_kept(tmp_path: Path, file: str, content: str) -> None:
    local = LocalEdge(tmp_path / "edge")
    edge = Edge(local, local, ZONE)
    (tmp_path / "edge").mkdir()
    (tmp_path / "edge" / file).write_text(content)
    spec = make_spec()
    calls: list[Callable[[], object]] = (
        [lambda: edge.publish_dns(spec, HOST, 31000), edge.dns.list_records, lambda: edge.remove_dns(spec)]
        if file == "dns.json" else [lambda: edge.publish_proxy(spec, HOST, 31000), edge.proxy.list_servers])
    for call in calls:
        with pytest.raises(DriverError) as info:
            call()
        assert info.value.code == "edge_file_corrupt"
    assert (tmp_path / "edge" / file).read_text() == content


def test_empty_local_files_read_as_empty_and_hand_edits_survive(tmp_path: Path) -> None:
    local = LocalEdge(tmp_path / "edge")
    (tmp_path / "edge").mkdir()
    (tmp_path / "edge" / "dns.json").write_text("")
    (tmp_path / "edge" / "proxy.json").write_text("  \n")
    assert local.list_records() == [] and local.list_servers() == {}
    hand = {"id": "handmade", "type": "A", "name": "other.example", "content": "10.0.0.1"}
    (tmp_path / "edge" / "dns.json").write_text(json.dumps([hand]))
    spec = make_spec()
    record = Edge(local, local, ZONE).publish_dns(spec, HOST, 31000)
    assert local.list_records() == [hand, record]
    assert not list((tmp_path / "edge").glob("*.tmp"))


def test_concurrent_local_writes_lose_nothing(tmp_path: Path) -> None:
    edges = [Edge(local, local, ZONE) for local in (LocalEdge(tmp_path / "edge") for _ in range(8))]

    def publish(worker: int) -> None:
        for _ in range(10):
            spec = make_spec()
            edges[worker].publish_dns(spec, HOST, 30000)
            edges[worker].publish_proxy(spec, HOST, 30000)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(publish, range(8)))
    assert len(edges[0].dns.list_records()) == 80 and len(edges[0].proxy.list_servers()) == 80
