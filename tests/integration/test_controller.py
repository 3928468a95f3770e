"""The controller and the repair worker against a real store (SQLite and PostgreSQL), Redis, a fake driver and
a fake edge (DNS and proxy in memory, with the real ownership rules)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from api.controller_app import create_controller_app
from domain.operation import Operation
from domain.repair import ControllerLeadership, Drift, Repair
from projections import repairs as repairs_view
from services.adapters.fake_driver import FakeDriver
from services.bootstrap import Container
from services.edge import Edge
from services.infrastructure.leader import InProcessLock, RedisLeaderLock
from services.instances import request_instance
from services.ports import ownership_comment
from services.workers.controller import Controller
from services.workers.repair import RepairWorker
from tests.integration.conftest import ADMIN_TOKEN, auth, poll
from tests.integration.test_lifecycle import running_instance

pytestmark = pytest.mark.usefixtures("database_url")

WORKERS = ("projections", "provisioning", "repair")


def controller(container: Container, mode: str = "live", lock: Any = None, **kw: Any) -> Controller:
    lock = lock or InProcessLock(ttl=30, key=f"test-{uuid4().hex}")  # never a lease a previous test left
    return Controller(container.app, container.db, container.driver, container.edge, lock,
                      mode=mode, interval=0.05, stale_after=kw.pop("stale_after", 900.0),
                      zone=container.settings.dns_zone, **kw)


def caught_up(container: Container) -> None:
    assert container.wait_for_projections(container.app.head(), tuple(container.runners), timeout=20)


def repair_rows(container: Container) -> list[dict[str, Any]]:
    caught_up(container)
    return repairs_view.list_repairs(container.db)


def wait_repair(container: Container, status: str) -> dict[str, Any]:
    return poll(lambda: repairs_view.list_repairs(container.db), lambda rows: rows and rows[0]["status"] == status)[0]


@pytest.fixture
def live(make_container: Callable[..., Container]) -> tuple[Container, TestClient, dict[str, str], str]:
    container = make_container(WORKERS)
    client = TestClient(create_app(container))
    r = client.post("/api/admin/users", json={"email": "ctl@example.com"}, headers=auth(ADMIN_TOKEN))
    headers = auth(r.json()["token"])
    iid = running_instance(client, headers)
    caught_up(container)
    yield container, client, headers, iid
    client.close()


def srv_names(edge: Edge) -> list[str]:
    return [r["name"] for r in edge.dns.list_records()]


def srv_name(edge: Edge, iid: str) -> str:
    return next(name for name in srv_names(edge) if iid[:8] in name)


def srv_port(edge: Edge, name: str) -> int:
    return next(r["data"]["port"] for r in edge.dns.list_records() if r["name"] == name)


def drop_srv(edge: Edge, iid: str) -> dict[str, Any]:
    """An operator deletes the instance's SRV record by hand."""
    record = next(r for r in edge.dns.records if iid[:8] in r["name"])
    edge.dns.records.remove(record)
    return record


def drop_proxy(edge: Edge, iid: str) -> None:
    """An operator deletes the instance's proxy entry by hand."""
    edge.proxy.map = replace(edge.proxy.map, servers={k: v for k, v in edge.proxy.map.servers.items()
                                                       if iid[:8] not in k})


def test_dry_run_records_once_and_changes_nothing(live: tuple, driver: FakeDriver, edge: Edge) -> None:
    container, client, _, iid = live
    name = srv_name(edge, iid)
    record = drop_srv(edge, iid)
    calls = len(driver.calls)
    ctl = controller(container, mode="dry-run")
    result = ctl.tick()
    assert result is not None and {f.kind for f in result.findings} == {"srv_missing"}
    rows = repair_rows(container)
    assert [(r["kind"], r["status"], r["mode"], r["level"]) for r in rows] == [
        ("edge_republish", "proposed", "dry-run", 1)]
    head = container.app.head()
    ctl.tick()  # the same drift again: nothing new in the log
    caught_up(container)
    assert container.app.head() == head
    assert name not in srv_names(edge) and len(driver.calls) == calls  # nothing was repaired
    admin = client.get("/api/admin/repairs", headers=auth(ADMIN_TOKEN)).json()
    assert admin["items"][0]["status"] == "proposed" and admin["controller"]["mode"] == "dry-run"
    assert admin["drift"][0]["findings"][0]["kind"] == "srv_missing"
    # The drift goes away by hand: the proposal is closed as resolved, the finding cleared.
    edge.dns.records.append(record)
    ctl.tick()
    rows = repair_rows(container)
    assert rows[0]["status"] == "skipped" and rows[0]["reason"] == "resolved"
    assert repairs_view.current_drift(container.db) == []


def test_live_mode_restores_a_deleted_srv_record(live: tuple, edge: Edge) -> None:
    container, client, _, iid = live
    name = srv_name(edge, iid)
    record = drop_srv(edge, iid)
    drop_proxy(edge, iid)
    ctl = controller(container)
    ctl.tick()  # first pass: found and queued; the repair worker acts before the next pass
    repair = wait_repair(container, "succeeded")
    assert repair["kind"] == "edge_republish" and repair["mode"] == "live"
    assert srv_port(edge, name) == record["data"]["port"]
    assert edge.proxy.list_servers()  # the proxy entry is back too
    caught_up(container)
    ctl.tick()  # second pass: nothing left to find
    caught_up(container)
    assert repairs_view.current_drift(container.db) == []
    stream = client.get(f"/api/admin/streams/{repair['id']}/events", headers=auth(ADMIN_TOKEN)).json()
    types = [e["type"] for e in stream["events"]]
    assert types == ["zlh.Repair.Proposed", "zlh.Repair.Queued", "zlh.Repair.Started", "zlh.Repair.Succeeded"]
    assert all(e["data"].get("epoch") == 1 for e in stream["events"])
    # The read model is rebuildable from position 0 and comes out the same.
    before = (repairs_view.list_repairs(container.db), container.db.query("SELECT * FROM rm_drift"))
    container.runners["repairs"].rebuild()
    assert (repairs_view.list_repairs(container.db), container.db.query("SELECT * FROM rm_drift")) == before


def test_stale_operation_is_failed_as_interrupted(make_container: Callable[..., Container]) -> None:
    container = make_container(("projections", "repair"))  # no provisioning worker: nobody runs the operation
    owner = UUID(int=7)
    accepted = request_instance(container.app, owner, "key-1", "game", "stuck", "minecraft")
    op: Operation = container.app.repository.get(accepted.operation_id)
    op.claim("a-worker-that-died")
    op.start_step("allocate_port", {})
    container.app.save(op)
    caught_up(container)
    fresh = controller(container)
    assert fresh.tick().findings == ()  # not stale yet under the default 15 minutes
    fresh.now = lambda: datetime.now(UTC) + timedelta(minutes=16)
    assert {f.kind for f in fresh.tick().findings} == {"stale_operation"}
    repair = wait_repair(container, "succeeded")
    assert repair["kind"] == "clear_stale_operation_lock"
    op = container.app.repository.get(accepted.operation_id)
    assert op.phase.value == "failed" and op.error["code"] == "interrupted"
    assert "allocate_port" in op.error["message"]
    instance = container.app.repository.get(accepted.instance_id)
    assert instance.pending_operation_id is None and instance.status.value == "failed"


def test_level2_is_proposed_never_executed(live: tuple, driver: FakeDriver, make_container: Callable) -> None:
    container, _, _, iid = live
    driver.crash(UUID(iid))
    ctl = controller(container, level2=True)  # even with the setting on, the code allow-list says no
    ctl.tick()
    rows = repair_rows(container)
    assert [(r["kind"], r["status"], r["level"]) for r in rows] == [("restart_instance", "proposed", 2)]
    assert UUID(iid) not in driver.processes
    ctl.tick()
    assert len(repair_rows(container)) == 1


def test_orphans_are_found_and_only_proposed_and_others_records_are_left_alone(live: tuple, edge: Edge) -> None:
    container, _, _, _ = live
    zone = container.settings.dns_zone
    ghost = ownership_comment(UUID(int=0x12345678))  # ZLH's mark, of an instance that is gone
    orphan, theirs = f"_minecraft._tcp.ghost-12345678.{zone}", f"_minecraft._tcp.lobby.{zone}"
    edge.dns.upsert_srv(orphan, "127.0.0.1", 1, ghost)
    edge.proxy.register("ghost-12345678", "127.0.0.1:1", None, ghost)
    edge.dns.upsert_srv(theirs, "10.0.0.9", 25565, "made by hand")
    edge.proxy.map = replace(edge.proxy.map, servers={**edge.proxy.map.servers, "lobby": "10.0.0.9:25565"})
    controller(container).tick()
    rows = repair_rows(container)
    assert sorted((r["target"], r["kind"], r["status"]) for r in rows) == [
        (f"dns:{orphan}", "remove_orphan", "proposed"), ("proxy:ghost-12345678", "remove_orphan", "proposed")]
    assert orphan in srv_names(edge) and theirs in srv_names(edge)


def test_repeated_drift_is_escalated_after_three_repairs_an_hour(live: tuple, driver: FakeDriver,
                                                                  make_container: Callable, edge: Edge) -> None:
    container, _, _, iid = live
    ctl = controller(container)
    for round_ in range(3):
        drop_srv(edge, iid)
        ctl.tick()
        expected = round_ + 1
        poll(lambda: repairs_view.list_repairs(container.db),
             lambda rows, n=expected: len(rows) == n and rows[0]["status"] == "succeeded")
        caught_up(container)
        ctl.tick()  # drift gone: a new episode next time
        caught_up(container)
    drop_srv(edge, iid)
    ctl.tick()
    rows = repair_rows(container)
    assert rows[0]["status"] == "escalated" and len(rows) == 4
    assert not any(iid[:8] in n for n in srv_names(edge))  # not executed
    ctl.tick()
    assert len(repair_rows(container)) == 4  # escalated once, not once per pass


def test_staff_alerts_for_executed_and_escalated_repairs(make_container: Callable[..., Container],
                                                        driver: FakeDriver, edge: Edge) -> None:
    container = make_container((*WORKERS, "notifications"))
    client = TestClient(create_app(container))
    try:
        r = client.post("/api/admin/users", json={"email": "alerts@example.com"}, headers=auth(ADMIN_TOKEN))
        iid = running_instance(client, auth(r.json()["token"]))
        caught_up(container)
        drop_srv(edge, iid)
        controller(container).tick()
        wait_repair(container, "succeeded")
        rows = poll(lambda: container.db.query("SELECT kind, channel, status FROM rm_deliveries "
                                               "WHERE kind = 'repair_alert'"),
                    lambda rows: rows and rows[0]["status"] not in ("pending", "attempting"))
        # No webhook configured in tests: the alert is recorded as not sent.
        assert [(r["channel"], r["status"]) for r in rows] == [("discord", "not_sent")]
    finally:
        client.close()


# Leader lock and fencing, on Redis.


def test_only_one_controller_leads(live: tuple, redis_test_url: str) -> None:
    container, _, _, _ = live
    key = f"zlh:test:{uuid4().hex}"  # unique across parallel test processes
    a = controller(container, lock=RedisLeaderLock(redis_test_url, ttl=30, key=key), holder="a")
    b = controller(container, lock=RedisLeaderLock(redis_test_url, ttl=30, key=key), holder="b")
    try:
        assert a.tick() is not None and a.status.state == "leader" and a.status.epoch == 1
        assert b.tick() is None and b.status.state == "follower"
        a.lock.release()
        assert b.tick() is not None and b.status.epoch == 2
        assert a.tick() is None  # b holds the lease now
    finally:
        a.lock.close()
        b.lock.close()


def test_split_brain_the_old_epoch_is_fenced_off(live: tuple, driver: FakeDriver, redis_test_url: str,
                                                 edge: Edge) -> None:
    """A leader paused past its lease writes after a new leader began its term: the store rejects it."""
    container, _, _, iid = live
    key = f"zlh:test:split:{uuid4().hex}"
    paused, resume = threading.Event(), threading.Event()

    def pause() -> None:
        paused.set()
        assert resume.wait(30)

    a = controller(container, mode="dry-run", lock=RedisLeaderLock(redis_test_url, ttl=0.5, key=key), holder="a")
    b = controller(container, mode="dry-run", lock=RedisLeaderLock(redis_test_url, ttl=30, key=key), holder="b")
    try:
        assert a.tick() is not None and a.status.epoch == 1
        drop_srv(edge, iid)
        a.before_write = pause
        outcome: list[Any] = []
        thread = threading.Thread(target=lambda: outcome.append(a.tick()))
        thread.start()
        assert paused.wait(30)  # a renewed its lease, then stalled right before writing
        client = redis.Redis.from_url(redis_test_url)
        poll(lambda: client.get(key), lambda v: v is None)  # a's lease ran out
        client.close()
        assert b.tick() is not None and b.status.epoch == 2
        resume.set()
        thread.join(30)
        assert outcome == [None] and a.status.state == "follower"
    finally:
        resume.set()
        a.lock.close()
        b.lock.close()
    leadership = container.app.repository.get(ControllerLeadership.create_id())
    assert leadership.epoch == 2
    drift: Drift = container.app.repository.get(Drift.create_id(f"instance:{iid}"))
    repair: Repair = container.app.repository.get(drift.last_repair["edge_republish"])
    assert repair.epoch == 2
    epochs = [getattr(e, "epoch", None) for e in container.app.repository.event_store.get(drift.id)]
    assert set(epochs) - {None} == {2}  # nothing of epoch 1 landed


def test_redis_down_controller_idles_and_the_api_keeps_working(make_container: Callable[..., Container],
                                                                  driver: FakeDriver) -> None:
    container = make_container(WORKERS)
    ctl = controller(container, lock=RedisLeaderLock("redis://127.0.0.1:1/0", ttl=5))
    container.controller = ctl
    try:
        assert ctl.tick() is None and ctl.status.state == "lock_unavailable"
        with TestClient(create_controller_app(container)) as probe:
            ready = probe.get("/readyz")
            assert ready.status_code == 503 and ready.json()["controller"]["state"] == "lock_unavailable"
            assert "zlh_controller_lock_available 0.0" in probe.get("/metrics").text
        with TestClient(create_app(container)) as client:
            assert client.get("/readyz").status_code == 200
            r = client.post("/api/admin/users", json={"email": "r@example.com"}, headers=auth(ADMIN_TOKEN))
            running_instance(client, auth(r.json()["token"]))  # provisioning goes on
        assert container.app.head() > 0 and repairs_view.list_repairs(container.db) == []
    finally:
        container.controller = None
        ctl.lock.close()


# Never repair a suspended server.


def suspend(container: Container, iid: str) -> None:
    instance = container.app.repository.get(UUID(iid))
    assert instance.suspend("billing")
    container.app.save(instance)
    caught_up(container)


def test_a_suspended_server_is_not_repaired(make_container: Callable[..., Container], driver: FakeDriver,
                                            edge: Edge) -> None:
    container = make_container(WORKERS)
    with TestClient(create_app(container)) as client:
        r = client.post("/api/admin/users", json={"email": "s@example.com"}, headers=auth(ADMIN_TOKEN))
        headers = auth(r.json()["token"])
        iid = running_instance(client, headers)
        stop = client.post(f"/api/instances/{iid}/power", json={"action": "stop"}, headers=headers).json()
        poll(lambda: client.get(f"/api/operations/{stop['operation_id']}", headers=headers).json(),
             lambda op: op["phase"] == "succeeded")
    suspend(container, iid)
    drop_srv(edge, iid)
    ctl = controller(container)
    ctl.tick()
    rows = repair_rows(container)
    assert [(r["kind"], r["status"], r["reason"]) for r in rows] == [
        ("edge_republish", "skipped", "billing_suspended")]
    ctl.tick()
    assert len(repair_rows(container)) == 1  # recorded once, not once per pass
    assert not any(iid[:8] in n for n in srv_names(edge))


def test_the_worker_checks_suspension_again_right_before_acting(live: tuple, driver: FakeDriver, edge: Edge) -> None:
    container, _, _, iid = live
    container.stop_worker("repair")  # this test runs the worker's step by hand
    drop_srv(edge, iid)
    controller(container).tick()
    queued = repair_rows(container)[0]
    assert queued["status"] == "queued"
    instance = container.app.repository.get(UUID(iid))
    assert instance.suspend("billing", stop_operation_id=UUID(int=5))
    container.app.save(instance)
    worker = RepairWorker(container.app, container.db, driver, container.edge, worker_id="w", stale_after=900)
    assert worker.execute(UUID(queued["id"])) == "skipped"
    assert container.app.repository.get(UUID(queued["id"])).reason == "billing_suspended"
    assert not any(iid[:8] in n for n in srv_names(edge))


def test_a_failed_repair_is_retried_later_with_backoff(live: tuple, driver: FakeDriver, edge: Edge) -> None:
    container, _, _, iid = live
    from services.ports import DriverError

    drop_srv(edge, iid)
    edge.dns.fail_on["upsert_srv"] = DriverError("edge_io_error", "the edge is read-only")
    clock = {"now": datetime.now(UTC)}
    ctl = controller(container, now=lambda: clock["now"])
    ctl.tick()
    failed = wait_repair(container, "failed")
    assert failed["error"]["code"] == "edge_io_error"
    caught_up(container)
    ctl.tick()  # within the backoff: nothing new
    assert len(repair_rows(container)) == 1
    del edge.dns.fail_on["upsert_srv"]
    clock["now"] += timedelta(minutes=11)
    ctl.tick()
    assert wait_repair(container, "succeeded")["id"] != failed["id"]
    assert any(iid[:8] in n for n in srv_names(edge))
