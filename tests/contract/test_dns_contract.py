"""The `DnsProvider` contract, run against `LocalEdge` (dns.json), `CloudflareDns` on `FakeCloudflare`, and the
in-memory `FakeDns` the other tests use.

The Cloudflare adapter uses the real `cloudflare` library over HTTP against the fake,
with an injected clock and sleep: waits (Retry-After, the request budget) advance a
fake clock instead of the test's time, so the tests check what the fake saw, never
how long anything took.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from services.adapters.cloudflare_dns import CloudflareDns, TokenBucket, retry_after_seconds
from services.adapters.edge_files import LocalEdge
from services.adapters.fake_edge import FakeDns
from services.ports import DnsProvider, DriverError, ownership_comment
from tests.fakes.cloudflare_api import FakeCloudflare
from tests.fakes.serve import ServedApp, serve_app

ZONE = "play.example.com"
ZONE_ID = "023e105f4ecef8ad9ca31a8372d0c353"
OTHER_ZONE_ID = "9a7806061c88ada191ed06f989cc3dac"
TOKEN = "cf-test-token-0123456789abcdef0123456789"
WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class FakeTime:
    """A clock that only moves when something sleeps on it."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Backend:
    """A `DnsProvider` under test and the means to meddle with what it stores."""

    name: str
    dns: DnsProvider
    add_foreign: Callable[..., None]  # a record someone else made: add_foreign(type=..., name=..., ...)
    writes: Callable[[], int]  # how many times the store was written so far


def srv(edge: str = "alpha-1a2b3c4d") -> str:
    return f"_minecraft._tcp.{edge}.{ZONE}"


def mark() -> str:
    return ownership_comment(uuid4())


def local_backend(tmp_path: Path) -> Backend:
    edge = LocalEdge(tmp_path / "edge")
    replaced = {"count": 0, "inode": None}

    def writes() -> int:
        try:
            inode = os.stat(edge.edge.dns_path).st_ino
        except FileNotFoundError:
            return replaced["count"]
        if inode != replaced["inode"]:
            replaced["count"] += 1
            replaced["inode"] = inode
        return replaced["count"]

    def add_foreign(**record: Any) -> None:
        records = edge.list_records()
        records.append({"id": uuid4().hex, **record})
        edge.edge.dir.mkdir(parents=True, exist_ok=True)
        edge.edge.dns_path.write_text(json.dumps(records))
        writes()

    return Backend("local", edge, add_foreign, writes)


def cloudflare_adapter(url: str, time: FakeTime, token: str = TOKEN, **kwargs: Any) -> CloudflareDns:
    return CloudflareDns(
        token=token,
        zone_id=ZONE_ID,
        zone_name=ZONE,
        api_url=f"{url}/client/v4",
        clock=time.clock,
        sleep=time.sleep,
        **kwargs,
    )


@pytest.fixture
def fake() -> FakeCloudflare:
    return FakeCloudflare({ZONE_ID: ZONE, OTHER_ZONE_ID: "other.example.net"}, {TOKEN: {ZONE_ID}, "other": None})


@pytest.fixture
def served(fake: FakeCloudflare) -> Iterator[ServedApp]:
    with serve_app(fake.app) as server:
        yield server


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def cloudflare(served: ServedApp, time: FakeTime) -> Iterator[CloudflareDns]:
    adapter = cloudflare_adapter(served.url, time)
    yield adapter
    adapter.close()


def fake_backend() -> Backend:
    dns = FakeDns()
    return Backend("fake", dns, lambda **record: dns.records.append({"id": uuid4().hex, **record}),
                   lambda: dns.writes)


@pytest.fixture(params=["local", "cloudflare", "fake"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return local_backend(tmp_path)
    if request.param == "fake":
        return fake_backend()
    fake: FakeCloudflare = request.getfixturevalue("fake")
    adapter: CloudflareDns = request.getfixturevalue("cloudflare")
    return Backend(
        "cloudflare",
        adapter,
        lambda **record: fake.add_record(ZONE_ID, **record) and None,
        lambda: sum(1 for r in fake.requests if r.method in WRITES),
    )


def at(dns: DnsProvider, name: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [r for r in dns.list_records() if r["name"] == name and (kind is None or r["type"] == kind)]


# -- the contract, every provider ---------------------------------------------------------------------


def test_upsert_srv_is_idempotent_and_carries_the_mark(backend: Backend) -> None:
    dns, owner = backend.dns, mark()
    record = dns.upsert_srv(srv(), "node1.example.net", 30001, owner)
    assert record["type"] == "SRV"
    assert record["name"] == srv()
    assert record["data"] == {"priority": 0, "weight": 5, "port": 30001, "target": "node1.example.net"}
    assert record["comment"] == owner
    assert record["ttl"] == 60
    before = backend.writes()
    assert dns.upsert_srv(srv(), "node1.example.net", 30001, owner) == record
    assert backend.writes() == before  # nothing to change, nothing written
    assert at(dns, srv()) == [record]


def test_upsert_srv_updates_our_record_in_place(backend: Backend) -> None:
    dns, owner = backend.dns, mark()
    first = dns.upsert_srv(srv(), "node1.example.net", 30001, owner)
    second = dns.upsert_srv(srv(), "node2.example.net", 30002, owner)
    assert second["id"] == first["id"]
    assert second["data"]["port"] == 30002
    assert second["data"]["target"] == "node2.example.net"
    assert at(dns, srv()) == [second]


def test_names_compare_case_insensitively(backend: Backend) -> None:
    dns, owner = backend.dns, mark()
    record = dns.upsert_srv(srv().upper() + ".", "node1.example.net", 30001, owner)
    assert record["name"] == srv()
    assert dns.upsert_srv(srv(), "node1.example.net", 30001, owner) == record
    assert dns.remove(srv().upper(), owner) is True
    assert at(dns, srv()) == []


@pytest.mark.parametrize("comment", [None, "made by hand", "zlh instance 00000000-0000-0000-0000-000000000000"])
def test_a_record_without_our_mark_is_never_changed(backend: Backend, comment: str | None) -> None:
    backend.add_foreign(
        type="SRV",
        name=srv(),
        ttl=300,
        comment=comment,
        data={"priority": 1, "weight": 1, "port": 25565, "target": "elsewhere.example.org"},
    )
    before = [dict(r) for r in backend.dns.list_records()]
    writes = backend.writes()
    for attempt in (
        lambda: backend.dns.upsert_srv(srv(), "node1.example.net", 30001, mark()),
        lambda: backend.dns.remove(srv(), mark()),
    ):
        with pytest.raises(DriverError) as info:
            attempt()
        assert info.value.code == "record_not_ours"
        assert srv() in info.value.message
    assert backend.dns.list_records() == before
    assert backend.writes() == writes


def test_another_instances_record_is_not_ours(backend: Backend) -> None:
    dns, mine, theirs = backend.dns, mark(), mark()
    dns.upsert_srv(srv(), "node1.example.net", 30001, theirs)
    with pytest.raises(DriverError) as info:
        dns.upsert_srv(srv(), "node1.example.net", 30009, mine)
    assert info.value.code == "record_not_ours"
    assert [r["data"]["port"] for r in at(dns, srv())] == [30001]


def test_records_of_other_types_at_the_name_are_left_alone(backend: Backend) -> None:
    backend.add_foreign(type="TXT", name=srv(), ttl=300, content="hello", comment=None)
    owner = mark()
    backend.dns.upsert_srv(srv(), "node1.example.net", 30001, owner)
    assert backend.dns.remove(srv(), owner) is True
    assert [(r["type"], r["content"]) for r in at(backend.dns, srv())] == [("TXT", "hello")]


def test_remove_is_idempotent(backend: Backend) -> None:
    dns, owner = backend.dns, mark()
    dns.upsert_srv(srv(), "node1.example.net", 30001, owner)
    dns.upsert_srv(srv("beta-5e6f7a8b"), "node1.example.net", 30002, owner)
    assert dns.remove(srv(), owner) is True
    assert dns.remove(srv(), owner) is False
    assert dns.remove(srv("never-00000000"), owner) is False
    assert at(dns, srv()) == []
    assert len(at(dns, srv("beta-5e6f7a8b"))) == 1


def test_our_duplicates_collapse_into_one(backend: Backend) -> None:
    owner = mark()
    for port in (30001, 30002):
        backend.add_foreign(
            type="SRV",
            name=srv(),
            ttl=60,
            comment=owner,
            data={"priority": 0, "weight": 5, "port": port, "target": "node1.example.net"},
        )
    record = backend.dns.upsert_srv(srv(), "node1.example.net", 30003, owner)
    assert at(backend.dns, srv()) == [record]


def test_upsert_address_switches_family_and_is_idempotent(backend: Backend) -> None:
    dns, owner, host = backend.dns, mark(), f"alpha-1a2b3c4d.{ZONE}"
    a = dns.upsert_address(host, "203.0.113.7", owner)
    assert (a["type"], a["content"], a["comment"], a["proxied"]) == ("A", "203.0.113.7", owner, False)
    assert dns.upsert_address(host, "203.0.113.7", owner) == a
    aaaa = dns.upsert_address(host, "2001:db8::7", owner)
    assert (aaaa["type"], aaaa["content"]) == ("AAAA", "2001:db8::7")
    assert at(dns, host) == [aaaa]
    with pytest.raises(DriverError) as info:
        dns.upsert_address(host, "not-an-ip", owner)
    assert info.value.code == "bad_address"


def test_list_records_shows_everything_across_pages(backend: Backend) -> None:
    for i in range(130):
        backend.add_foreign(type="A", name=f"host{i:03d}.{ZONE}", ttl=300, content=f"198.51.100.{i}", comment=None)
    owner = mark()
    backend.dns.upsert_srv(srv(), "node1.example.net", 30001, owner)
    records = backend.dns.list_records()
    assert len(records) == 131
    assert len({r["id"] for r in records}) == 131
    assert next(r for r in records if r.get("comment") == owner)["name"] == srv()


def test_cloudflare_reads_every_page(cloudflare: CloudflareDns, fake: FakeCloudflare) -> None:
    for i in range(250):
        fake.add_record(ZONE_ID, type="A", name=f"host{i:03d}", ttl=300, content=f"198.51.100.{i % 250}")
    assert len(cloudflare.list_records()) == 250
    pages = [r.query for r in fake.requests if r.method == "GET"]
    assert pages == [f"page={n}&per_page=100" for n in (1, 2, 3)]


# -- LocalEdge specifics ---------------------------------------------------------------------------


def test_local_keeps_an_ip_target_and_makes_no_address_record(tmp_path: Path) -> None:
    edge = LocalEdge(tmp_path / "edge")
    record = edge.upsert_srv(srv(), "127.0.0.1", 30001, mark())
    assert record["data"]["target"] == "127.0.0.1"
    assert edge.list_records() == [record]


def test_local_adopts_the_records_earlier_versions_wrote(tmp_path: Path) -> None:
    """dns.json as the driver's edge steps wrote it before DNS had its own port: adopted, not rewritten."""
    edge = LocalEdge(tmp_path / "edge")
    owner = mark()
    name = srv()
    old = {"id": "5d1c0b1f9a4e4c3a8f0e2d7b6a5c4e3f", "type": "SRV", "name": name, "content": "5 30001 127.0.0.1",
           "priority": 0, "data": {"priority": 0, "weight": 5, "port": 30001, "target": "127.0.0.1"}, "ttl": 60,
           "proxied": False, "comment": owner}
    edge.edge.dir.mkdir(parents=True)
    edge.edge.dns_path.write_text(json.dumps([old], indent=2) + "\n")
    before = edge.edge.dns_path.read_bytes()
    assert edge.upsert_srv(name, "127.0.0.1", 30001, owner) == old
    assert edge.edge.dns_path.read_bytes() == before
    assert edge.remove(name, owner) is True


def test_local_corrupt_file_is_reported_and_kept(tmp_path: Path) -> None:
    edge = LocalEdge(tmp_path / "edge")
    edge.edge.dir.mkdir(parents=True)
    edge.edge.dns_path.write_text("{not json")
    with pytest.raises(DriverError) as info:
        edge.upsert_srv(srv(), "127.0.0.1", 30001, mark())
    assert info.value.code == "edge_file_corrupt"
    assert edge.edge.dns_path.read_text() == "{not json"


# -- CloudflareDns specifics -------------------------------------------------------------------------


def test_cloudflare_ip_target_gets_an_address_record_named_after_the_server(
    cloudflare: CloudflareDns, fake: FakeCloudflare
) -> None:
    owner, host = mark(), f"alpha-1a2b3c4d.{ZONE}"
    record = cloudflare.upsert_srv(srv(), "203.0.113.7", 30001, owner)
    assert record["data"]["target"] == host
    assert record["content"] == f"5 30001 {host}"
    address = at(cloudflare, host)
    assert [(r["type"], r["content"], r["comment"]) for r in address] == [("A", "203.0.113.7", owner)]
    writes = sum(1 for r in fake.requests if r.method in WRITES)
    assert cloudflare.upsert_srv(srv(), "203.0.113.7", 30001, owner) == record
    assert sum(1 for r in fake.requests if r.method in WRITES) == writes
    assert cloudflare.remove(srv(), owner) is True
    assert fake.zone_records(ZONE_ID) == []


def test_cloudflare_a_foreign_srv_is_refused_before_the_address_record_is_made(
    cloudflare: CloudflareDns, fake: FakeCloudflare
) -> None:
    fake.add_record(
        ZONE_ID, type="SRV", name=srv(), ttl=300, data={"priority": 0, "weight": 0, "port": 1, "target": "x"}
    )
    with pytest.raises(DriverError) as info:
        cloudflare.upsert_srv(srv(), "203.0.113.7", 30001, mark())
    assert info.value.code == "record_not_ours"
    assert [r["type"] for r in fake.zone_records(ZONE_ID)] == ["SRV"]


def test_cloudflare_error_codes_reach_the_message(cloudflare: CloudflareDns, fake: FakeCloudflare) -> None:
    fake.add_record(ZONE_ID, type="CNAME", name=f"alpha-1a2b3c4d.{ZONE}", ttl=300, content="elsewhere.example.org")
    with pytest.raises(DriverError) as info:
        cloudflare.upsert_srv(srv(), "203.0.113.7", 30001, mark())
    assert info.value.code == "cloudflare_error"
    assert "[81054]" in info.value.message
    assert "POST" in info.value.message


def test_cloudflare_names_outside_the_zone_are_refused(cloudflare: CloudflareDns, fake: FakeCloudflare) -> None:
    with pytest.raises(DriverError) as info:
        cloudflare.upsert_srv("_minecraft._tcp.alpha.example.org", "node1.example.net", 30001, mark())
    assert info.value.code == "bad_record"
    assert fake.requests == []


def test_cloudflare_429_waits_for_retry_after_then_retries(
    cloudflare: CloudflareDns, fake: FakeCloudflare, time: FakeTime
) -> None:
    fake.fail_next(2, status=429, retry_after=7)
    record = cloudflare.upsert_srv(srv(), "node1.example.net", 30001, mark())
    assert fake.statuses()[:3] == [429, 429, 200]  # the same GET, answered on the third try
    assert [r.method for r in fake.requests[:3]] == ["GET", "GET", "GET"]
    assert 7 in time.sleeps
    assert time.sleeps.count(7) == 2
    assert at(cloudflare, srv()) == [record]


def test_cloudflare_429_on_a_write_is_retried_once_allowed(cloudflare: CloudflareDns, fake: FakeCloudflare) -> None:
    fake.fail_next(1, status=429, retry_after=1, method="POST")
    cloudflare.upsert_srv(srv(), "node1.example.net", 30001, mark())
    assert fake.statuses("POST") == [429, 200]
    assert len(fake.zone_records(ZONE_ID)) == 1


def test_cloudflare_gives_up_after_the_attempt_limit(cloudflare: CloudflareDns, fake: FakeCloudflare) -> None:
    fake.fail_next(cloudflare.max_attempts, status=429, retry_after=1)
    with pytest.raises(DriverError) as info:
        cloudflare.list_records()
    assert info.value.code == "cloudflare_rate_limited"
    assert "[971]" in info.value.message
    assert fake.statuses() == [429] * cloudflare.max_attempts


def test_cloudflare_a_long_pause_fails_fast_and_blocks_the_adapter(
    cloudflare: CloudflareDns, fake: FakeCloudflare, time: FakeTime
) -> None:
    fake.fail_next(1, status=429, retry_after=300)
    with pytest.raises(DriverError) as info:
        cloudflare.list_records()
    assert info.value.code == "cloudflare_rate_limited"
    with pytest.raises(DriverError):
        cloudflare.upsert_srv(srv(), "node1.example.net", 30001, mark())
    assert len(fake.requests) == 1  # the pause is account-wide: nothing more was sent
    assert time.sleeps == []
    time.now += 300
    cloudflare.upsert_srv(srv(), "node1.example.net", 30001, mark())
    assert fake.statuses()[-1] == 200


def test_cloudflare_5xx_is_retried_for_reads_only(cloudflare: CloudflareDns, fake: FakeCloudflare) -> None:
    fake.fail_next(1, status=503, method="GET")
    assert cloudflare.list_records() == []
    assert fake.statuses("GET") == [503, 200]
    fake.fail_next(1, status=502, method="POST")
    with pytest.raises(DriverError) as info:
        cloudflare.upsert_srv(srv(), "node1.example.net", 30001, mark())
    assert info.value.code == "cloudflare_unavailable"
    assert fake.statuses("POST") == [502]  # an unknown outcome is never blindly repeated


@pytest.mark.parametrize(
    ("token", "code"), [("wrong-token", "[9109]"), ("other", None)], ids=["unknown-token", "other-token"]
)
def test_cloudflare_rejected_credentials(served: ServedApp, fake: FakeCloudflare, token: str, code: str | None) -> None:
    fake.tokens["other"] = {OTHER_ZONE_ID}
    adapter = cloudflare_adapter(served.url, FakeTime(), token=token)
    try:
        with pytest.raises(DriverError) as info:
            adapter.list_records()
    finally:
        adapter.close()
    assert info.value.code == "cloudflare_unauthorized"
    assert (code or "[10000]") in info.value.message
    assert token not in info.value.message
    assert token not in repr(adapter)


def test_cloudflare_unreachable_api(time: FakeTime) -> None:
    with serve_app(FakeCloudflare({}, {}).app) as server:
        url = server.url
    adapter = cloudflare_adapter(url, time, max_attempts=2)
    try:
        with pytest.raises(DriverError) as info:
            adapter.upsert_srv(srv(), "node1.example.net", 30001, mark())
    finally:
        adapter.close()
    assert info.value.code == "cloudflare_unavailable"


def test_cloudflare_budget_spaces_requests(served: ServedApp, fake: FakeCloudflare, time: FakeTime) -> None:
    adapter = cloudflare_adapter(served.url, time, budget=12, budget_window=10.0, burst=2)
    try:
        for _ in range(6):
            adapter.list_records()
    finally:
        adapter.close()
    assert len(fake.requests) == 6
    # 2 at once, then one per (12 - 2) / 10 s = 1 s: never more than 12 in any 10 s.
    assert time.sleeps == pytest.approx([1.0] * 4)


# -- pure helpers ------------------------------------------------------------------------------------


def test_token_bucket_never_exceeds_its_budget() -> None:
    time = FakeTime()
    bucket = TokenBucket(capacity=100, rate=1100 / 300, clock=time.clock)
    sent: list[float] = []
    for _ in range(3000):
        wait = bucket.take(max_wait=1e9)
        assert wait is not None
        time.sleep(wait)
        sent.append(time.now)
    end = 0
    for start, t in enumerate(sent):  # the busiest 5-minute window starting at each request
        while end < len(sent) and sent[end] < t + 300:
            end += 1
        assert end - start <= 1200
    assert sent[-1] - sent[0] > 300  # the run was long enough to test a full window


def test_token_bucket_refuses_a_wait_over_the_limit_without_reserving() -> None:
    time = FakeTime()
    bucket = TokenBucket(capacity=1, rate=0.5, clock=time.clock)
    assert bucket.take(0) == 0
    assert bucket.take(1.0) is None
    assert bucket.take(2.0) == pytest.approx(2.0)


def test_retry_after_parses_seconds_and_dates() -> None:
    assert retry_after_seconds({"retry-after": "7"}) == 7
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


# -- the fake itself, through the real library --------------------------------------------------------


@pytest.fixture
def library(served: ServedApp) -> Iterator[Any]:
    import cloudflare

    client = cloudflare.Cloudflare(api_token=TOKEN, base_url=f"{served.url}/client/v4", max_retries=0)
    yield client
    client.close()


def test_fake_put_replaces_patch_merges_delete_forgets(library: Any, fake: FakeCloudflare) -> None:
    records = library.dns.records
    created = records.create(zone_id=ZONE_ID, type="A", name="www", content="203.0.113.1", ttl=300, comment="hand")
    assert (created.name, created.comment, created.ttl) == (f"www.{ZONE}", "hand", 300)
    patched = records.edit(created.id, zone_id=ZONE_ID, type="A", name="www", ttl=120, content="203.0.113.2")
    assert (patched.content, patched.comment, patched.ttl) == ("203.0.113.2", "hand", 120)
    replaced = records.update(created.id, zone_id=ZONE_ID, type="A", name="www", ttl=1, content="203.0.113.3")
    assert (replaced.content, replaced.comment, replaced.ttl) == ("203.0.113.3", None, 1)
    records.delete(created.id, zone_id=ZONE_ID)
    import cloudflare

    with pytest.raises(cloudflare.NotFoundError) as info:
        records.get(created.id, zone_id=ZONE_ID)
    assert info.value.errors[0].code == 81044


def test_fake_filters_like_cloudflare(library: Any, fake: FakeCloudflare) -> None:
    fake.add_record(ZONE_ID, type="A", name="a", ttl=60, content="203.0.113.1", comment="zlh instance 1")
    fake.add_record(ZONE_ID, type="A", name="b", ttl=60, content="203.0.113.2", comment="Zlh Instance 2")
    fake.add_record(ZONE_ID, type="TXT", name="a", ttl=60, content="hello")
    names = lambda **q: sorted(r.name for r in library.dns.records.list(zone_id=ZONE_ID, **q))  # noqa: E731
    assert names(name={"exact": f"A.{ZONE}"}) == [f"a.{ZONE}", f"a.{ZONE}"]
    assert names(name={"exact": f"a.{ZONE}"}, type="TXT") == [f"a.{ZONE}"]
    assert names(comment={"exact": "zlh instance 2"}) == [f"b.{ZONE}"]  # case-insensitive
    assert names(comment={"startswith": "zlh instance"}) == [f"a.{ZONE}", f"b.{ZONE}"]
    assert names(comment={"absent": "true"}) == [f"a.{ZONE}"]
    assert names(type="TXT", comment={"exact": "zlh instance 2"}, match="any") == [f"a.{ZONE}", f"b.{ZONE}"]


def test_fake_refuses_like_cloudflare(library: Any, fake: FakeCloudflare, served: ServedApp) -> None:
    import cloudflare
    import httpx

    records = library.dns.records
    records.create(zone_id=ZONE_ID, type="A", name="www", content="203.0.113.1", ttl=60)
    cases = [
        (lambda: records.create(zone_id=ZONE_ID, type="A", name="www", content="203.0.113.1", ttl=60), 400, 81058),
        (
            lambda: records.create(zone_id=ZONE_ID, type="CNAME", name="www", content="x.example.org", ttl=60),
            400,
            81053,
        ),
        (lambda: records.create(zone_id=ZONE_ID, type="A", name="v4", content="2001:db8::1", ttl=60), 400, 1004),
        (lambda: records.create(zone_id=ZONE_ID, type="A", name="t", content="203.0.113.9", ttl=7), 400, 1004),
        (lambda: records.list(zone_id="0" * 32), 404, 7003),
    ]
    for call, status, code in cases:
        with pytest.raises(cloudflare.APIStatusError) as info:
            call()
        assert (info.value.status_code, info.value.errors[0].code) == (status, code)
    answer = httpx.get(f"{served.url}/client/v4/zones/{ZONE_ID}/dns_records")
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["code"] == 6003
    assert answer.json()["success"] is False
