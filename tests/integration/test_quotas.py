"""Quotas decided by the store, on SQLite and PostgreSQL: concurrent requests never overshoot, a 409 writes nothing,
deleting frees the slot; and the daily ticket numbers run out with a clear answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from domain.instance import Instance
from domain.name_claim import NameClaim
from domain.operation import Operation
from domain.quota import INSTANCES, TICKETS, Quota, QuotaExceededError, ticket_quota_subject
from domain.support import TicketCounter, TicketsExhaustedError
from services.bootstrap import Container
from services.infrastructure.database import DatabaseURL
from services.infrastructure.migrations import migrate
from services.infrastructure.store import ZLH, store_env
from services.instances import request_instance
from services.quotas import Quotas
from services.support import open_ticket
from services.users import Principal, create_user
from tests.integration.conftest import ADMIN_TOKEN, auth, poll
from tests.integration.test_api import GAME, assert_problem, create, make_customer, wait_operation


@pytest.fixture
def store(database_url: str) -> Iterator[ZLH]:
    url = DatabaseURL.parse(database_url)
    migrate(url)
    app = ZLH(env=store_env(url, pool_size=16))
    yield app
    app.close()


def outcomes(calls: list[Callable[[], object]]) -> list[object]:
    def run(call: Callable[[], object]) -> object:
        try:
            return call()
        except QuotaExceededError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def test_concurrent_creates_never_overshoot_the_instances_quota(store: ZLH) -> None:
    owner, other = uuid4(), uuid4()
    quotas = Quotas(instances_per_user=3)
    results = outcomes([lambda n=n: request_instance(store, owner, f"k{n}", "game", f"s{n}", "minecraft",
                                                                         quotas=quotas)
                        for n in range(16)])
    assert sum(not isinstance(r, QuotaExceededError) for r in results) == 3
    assert all(r.code == "quota_exceeded" for r in results if isinstance(r, QuotaExceededError))
    requested = [n for n in store.recorder.select_notifications(start=1, limit=100_000)
                 if n.topic == Instance.Requested.TOPIC]
    assert len(requested) == 3  # nothing was written for the refused ones
    quota = store.find(Quota.create_id(INSTANCES, str(owner)), Quota)
    assert quota is not None and len(quota.held) == 3
    assert request_instance(store, other, "k", "game", "s", "minecraft",
                            quotas=quotas).replayed is False  # per customer


def test_concurrent_tickets_never_overshoot_the_daily_quota(store: ZLH) -> None:
    user = create_user(store, "writer@example.com", False).principal
    quotas = Quotas(tickets_per_day=4)
    results = outcomes([lambda n=n: open_ticket(store, user, f"s{n}", "m", None, quotas=quotas) for n in range(12)])
    assert sum(not isinstance(r, QuotaExceededError) for r in results) == 4
    day = datetime.now(UTC).date().isoformat()
    counter = store.find(TicketCounter.create_id(day), TicketCounter)
    assert counter is not None and counter.last == 4  # the refused ones took no ticket number
    quota = store.find(Quota.create_id(TICKETS, ticket_quota_subject(user.id, day)), Quota)
    assert quota is not None and len(quota.held) == 4
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    ticket, _ = open_ticket(store, user, "next day", "m", None, now=tomorrow, quotas=quotas)
    assert ticket.number.startswith(f"ZLH-{tomorrow:%Y%m%d}-")


def test_instances_quota_over_http(make_container: Callable[..., Container]) -> None:
    container = make_container(max_instances_per_user=2)
    with TestClient(create_app(container)) as client:
        alice = make_customer(client, "alice@example.com")
        first = create(client, alice, "k1", {**GAME, "name": "one"})
        create(client, alice, "k2", {**GAME, "name": "two"})
        r = create(client, alice, "k3", {**GAME, "name": "three"})
        assert_problem(r, 409, "quota_exceeded")
        assert r.json()["limit"] == 2 and r.json()["quota"] == "instances" and "delete one" in r.json()["detail"]
        alice_id = UUID(client.get("/api/me", headers=alice).json()["id"])
        assert container.app.find(Operation.create_id(alice_id, "k3"), Operation) is None  # nothing written
        assert not container.app.find(NameClaim.create_id(alice_id, "three"), NameClaim)
        replay = create(client, alice, "k1", {**GAME, "name": "one"})  # a retry of an accepted create still replays
        assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
        assert create(client, make_customer(client, "bob@example.com"), "k1").status_code == 202  # per customer

        wait_operation(client, alice, first.json()["operation_id"])
        deleted = client.delete(f"/api/instances/{first.json()['instance_id']}", headers=alice).json()
        assert wait_operation(client, alice, deleted["operation_id"])["phase"] == "succeeded"
        assert create(client, alice, "k4", {**GAME, "name": "three"}).status_code == 202  # the slot is free again


def test_a_slot_a_crash_left_behind_is_reclaimed_at_the_limit(make_container: Callable[..., Container]) -> None:
    """The slot of a deleted instance is freed right after the deletion; if a crash came in between, the next
    create at the limit frees it."""
    container = make_container(max_instances_per_user=1)
    with TestClient(create_app(container)) as client:
        alice = make_customer(client, "alice@example.com")
        first = create(client, alice, "k1", {**GAME, "name": "one"}).json()
        wait_operation(client, alice, first["operation_id"])
        deleted = client.delete(f"/api/instances/{first['instance_id']}", headers=alice).json()
        assert wait_operation(client, alice, deleted["operation_id"])["phase"] == "succeeded"
        owner = UUID(client.get("/api/me", headers=alice).json()["id"])
        quota_id = Quota.create_id(INSTANCES, str(owner))
        poll(lambda: container.app.find(quota_id, Quota).held, lambda held: held == [])  # freed after the deletion
        quota = container.app.find(quota_id, Quota)
        quota.take(UUID(first["instance_id"]), None)  # as if the worker had crashed before freeing it
        container.app.save(quota)
        assert create(client, alice, "k2", {**GAME, "name": "two"}).status_code == 202
        quota = container.app.find(Quota.create_id(INSTANCES, str(owner)), Quota)
        assert quota is not None and len(quota.held) == 1
        assert_problem(create(client, alice, "k3", {**GAME, "name": "three"}), 409, "quota_exceeded")


def test_instances_from_before_quotas_count(make_container: Callable[..., Container]) -> None:
    """A customer who had servers before quotas existed: their quota starts with those (from the read model)."""
    container = make_container(max_instances_per_user=2, workers=("projections",))
    owner = uuid4()
    position = 0
    for n in range(2):  # written as the code before quotas did: operation, instance and name claim only
        op = Operation(request_key=f"old{n}", kind="create", instance_id=Instance.create_id(
            Operation.create_id(owner, f"old{n}")), owner_id=owner, fingerprint="f", params={})
        instance = Instance(owner_id=owner, kind="game", name=f"old{n}", template="minecraft", edge_name=f"old{n}-x",
                            operation_id=op.id)
        claim = NameClaim(owner_id=owner, name=f"old{n}", instance_id=instance.id)
        position = container.app.save(op, instance, claim)[-1].notification.id
    assert container.wait_for_projections(position, ("instances",))
    with pytest.raises(QuotaExceededError):
        request_instance(container.app, owner, "new", "game", "new", "minecraft", quotas=container.quotas)


def test_tickets_quota_over_http(make_container: Callable[..., Container]) -> None:
    container = make_container(max_tickets_per_day=2)
    with TestClient(create_app(container)) as client:
        alice = make_customer(client, "alice@example.com")
        ticket = {"subject": "help", "message": "please", "instance_id": None}
        for _ in range(2):
            assert client.post("/api/support/create", json=ticket, headers=alice).status_code == 201
        r = client.post("/api/support/create", json=ticket, headers=alice)
        assert_problem(r, 409, "quota_exceeded")
        assert r.json()["quota"] == "tickets" and "tomorrow" in r.json()["detail"]
        mine = client.get("/api/support/tickets", headers=alice).json()["items"]
        assert len(mine) == 2
        reply = client.post(f"/api/support/tickets/{mine[0]['id']}/reply", json={"message": "more"}, headers=alice)
        assert reply.status_code == 200  # replying is not opening


def test_the_days_ticket_numbers_run_out_clearly(make_container: Callable[..., Container],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import domain.support

    monkeypatch.setattr(domain.support, "MAX_TICKETS_PER_DAY", 3)
    container = make_container()
    with TestClient(create_app(container)) as client:
        customers = [make_customer(client, f"c{n}@example.com") for n in range(4)]
        ticket = {"subject": "help", "message": "please", "instance_id": None}
        for headers in customers[:3]:
            assert client.post("/api/support/create", json=ticket, headers=headers).status_code == 201
        head = container.app.head()
        r = client.post("/api/support/create", json=ticket, headers=customers[3])
        assert_problem(r, 503, "tickets_exhausted")
        assert "after midnight UTC" in r.json()["detail"] and 1 <= int(r.headers["Retry-After"]) <= 86400
        assert container.app.head() == head
    user = Principal(uuid4(), "x@example.com", False)
    with pytest.raises(TicketsExhaustedError):
        open_ticket(container.app, user, "s", "m", None)


def test_backups_quota_and_deleting_frees_a_slot(make_container: Callable[..., Container]) -> None:
    container = make_container(max_backups_per_instance=2)
    with TestClient(create_app(container)) as client:
        alice = make_customer(client, "alice@example.com")
        accepted = create(client, alice, "k1").json()
        wait_operation(client, alice, accepted["operation_id"])
        iid = accepted["instance_id"]
        backups = []
        for _ in range(2):
            r = client.post(f"/api/instances/{iid}/backups", headers=alice)
            assert r.status_code == 202, r.text
            assert wait_operation(client, alice, r.json()["operation_id"])["phase"] == "succeeded"
            backups.append(r.json()["backup_id"])
        r = client.post(f"/api/instances/{iid}/backups", headers=alice)
        assert_problem(r, 409, "quota_exceeded")
        assert r.json()["quota"] == "backups" and r.json()["limit"] == 2
        instance = container.app.find(UUID(iid), Instance)
        assert instance is not None and instance.pending_operation_id is None  # nothing written
        deletion = client.delete(f"/api/backups/{backups[0]}", headers=alice)
        assert deletion.status_code == 202
        assert wait_operation(client, alice, deletion.json()["operation_id"])["phase"] == "succeeded"
        r = client.post(f"/api/instances/{iid}/backups", headers=alice)
        assert r.status_code == 202 and wait_operation(client, alice, r.json()["operation_id"])["phase"] == "succeeded"
        assert len(client.get(f"/api/instances/{iid}/backups", headers=alice).json()["items"]) == 2
        admin_listed = client.get(f"/api/instances/{iid}/backups", headers=auth(ADMIN_TOKEN)).json()["items"]
        assert {b["id"] for b in admin_listed} == {backups[1], r.json()["backup_id"]}
