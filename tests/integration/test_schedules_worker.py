"""The schedules worker with an injected clock (no sleeps), on SQLite and PostgreSQL.

At most once per due time with two workers racing in threads; a run missed during downtime runs once
at start-up within the grace window, and is recorded as missed beyond it; delays wait for the clock;
a task refused with `operation_in_progress` fails with that code and is not retried; a suspended
account's runs are skipped; a task whose worker died is failed as interrupted, never repeated.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from domain.billing import BillingAccount, EnforcementState, fact_from_stripe
from domain.billing import Schedule as BillingSchedule
from domain.schedule import Schedule, ScheduleRun, run_id_for
from projections.schedules import queue_stats
from services import schedules
from services.activity import record_console_command, record_file_write
from services.adapters.fake_driver import FakeDriver
from services.bootstrap import Container
from services.infrastructure.projection_runner import ProjectionRunner
from services.instances import request_instance
from services.lifecycle import request_power
from services.users import create_user
from services.workers.provisioning import ProvisioningManager
from services.workers.schedules import ScheduleManager

T0 = datetime(2030, 1, 7, 3, 50, tzinfo=UTC)  # ten minutes before a 04:00 UTC due time


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    container: Container
    clock: Clock
    owner: UUID
    instance: UUID
    driver: FakeDriver
    provisioning: ProvisioningManager

    def worker(self, grace: float = 300.0) -> ScheduleManager:
        return ScheduleManager(self.container.app, self.container.db, self.driver, grace=grace, now=self.clock)

    def catch_up(self) -> None:
        for runner in self.container.runners.values():
            runner.catch_up()

    def operations(self) -> None:
        """Run every queued operation to its end (the provisioning worker, driven by hand)."""
        self.catch_up()
        for row in self.container.db.query("SELECT id FROM rm_operations WHERE phase = 'queued'"):
            if self.provisioning.claim(UUID(row["id"])):
                self.provisioning.execute(UUID(row["id"]))
        self.catch_up()

    def settle(self, *workers: ScheduleManager) -> None:
        """Let the workers follow the log (operations that ended, runs planned) and sweep, a few rounds."""
        for _ in range(3):
            self.catch_up()
            for worker in workers:
                while worker.dispatch_page():
                    pass
                worker.sweep()

    def schedule(self, tasks: list[dict], cron: str = "0 4 * * *", **fields: object) -> UUID:
        written = schedules.create_schedule(self.container.app, self.owner, self.owner, self.instance,
                                            {"name": "nightly", "cron": cron, "tasks": tasks, **fields}, self.clock())
        self.catch_up()
        return written.id

    def runs(self, schedule_id: UUID) -> list[dict]:
        self.catch_up()
        return self.container.db.query("SELECT id, due_at, status, reason_code, missed_count FROM rm_schedule_runs "
                                       "WHERE schedule_id = %s ORDER BY due_at", (str(schedule_id),))

    def commands(self) -> list[str]:
        return self.driver.commands.get(self.instance, [])


@pytest.fixture
def world(make_container: Callable[..., Container], driver: FakeDriver) -> Iterator[World]:
    container = make_container(workers=())  # nothing in the background: every step is driven here
    clock = Clock()
    owner = create_user(container.app, "cron@example.com", admin=False).principal.id
    accepted = request_instance(container.app, owner, "k", "game", "survival", "minecraft")
    provisioning = ProvisioningManager(container.app, container.db, driver, container.edge, worker_id="test",
                                       concurrency=1)
    w = World(container, clock, owner, accepted.instance_id, driver, provisioning)
    w.operations()
    yield w
    provisioning.stop(wait=True)


SAY = [{"action": "command", "payload": "say good morning"}]


def test_two_workers_racing_run_a_due_time_once(world: World) -> None:
    sid = world.schedule([*SAY, {"action": "power", "payload": "restart", "delay_seconds": 0}])
    world.clock.now = datetime(2030, 1, 7, 4, 0, 1, tzinfo=UTC)
    workers = [world.worker() for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def race(worker: ScheduleManager) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                worker.fire(sid)
                world.catch_up()
                worker.sweep()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    world.operations()
    world.settle(*workers)
    runs = world.runs(sid)
    assert [(r["due_at"], r["status"]) for r in runs] == [("2030-01-07T04:00:00.000000Z", "succeeded")]
    assert runs[0]["id"] == str(run_id_for(sid, datetime(2030, 1, 7, 4, 0, tzinfo=UTC)))
    assert world.commands().count("say good morning") == 1
    restarts = world.container.db.query("SELECT id FROM rm_operations WHERE kind = 'restart'")
    assert len(restarts) == 1
    # The timer moved on once: the schedule's stream has one TimerAdvanced.
    stream = world.container.app.stream(sid)
    assert [type(e).__name__ for e in stream].count("TimerAdvanced") == 1
    nxt = world.container.db.query("SELECT next_run_at FROM rm_schedules WHERE id = %s", (str(sid),))[0]
    assert nxt["next_run_at"] == "2030-01-08T04:00:00.000000Z"


def test_a_restarted_worker_never_runs_a_due_time_again(world: World) -> None:
    sid = world.schedule(SAY)
    world.clock.now = datetime(2030, 1, 7, 4, 0, 2, tzinfo=UTC)
    world.settle(world.worker())
    world.clock.now = datetime(2030, 1, 7, 4, 1, tzinfo=UTC)
    again = world.worker()  # a new process: it knows only the log
    world.settle(again)
    world.catch_up()
    world.settle(again)
    assert again.fire(sid) == []
    assert world.commands().count("say good morning") == 1
    assert [r["status"] for r in world.runs(sid)] == ["succeeded"]


def test_a_run_missed_within_the_grace_window_runs_once_at_start_up(world: World) -> None:
    sid = world.schedule(SAY, cron="0 * * * *")  # hourly: 04:00, 05:00, …
    # Down from 03:50 to 06:03: 04:00 and 05:00 are beyond the grace window, 06:00 within it.
    world.clock.now = datetime(2030, 1, 7, 6, 3, tzinfo=UTC)
    worker = world.worker(grace=300)
    world.settle(worker)
    world.catch_up()
    world.settle(worker)
    runs = world.runs(sid)
    assert [(r["due_at"], r["status"], r["missed_count"]) for r in runs] == [
        ("2030-01-07T04:00:00.000000Z", "missed", 2), ("2030-01-07T06:00:00.000000Z", "succeeded", None)]
    assert world.commands().count("say good morning") == 1
    # Nothing more until 07:00, then once again.
    world.clock.now = datetime(2030, 1, 7, 6, 59, tzinfo=UTC)
    world.settle(worker)
    world.clock.now = datetime(2030, 1, 7, 7, 0, 1, tzinfo=UTC)
    world.settle(worker)
    assert world.commands().count("say good morning") == 2


def test_a_run_missed_beyond_the_grace_window_is_recorded_as_missed_and_told(world: World) -> None:
    sid = world.schedule(SAY)
    world.clock.now = datetime(2030, 1, 7, 4, 10, tzinfo=UTC)  # 10 minutes late, grace 5
    worker = world.worker(grace=300)
    world.settle(worker)
    runs = world.runs(sid)
    assert [(r["status"], r["reason_code"], r["missed_count"]) for r in runs] == [("missed", "missed", 1)]
    assert world.commands() == []
    # The worker tells the owner from the log: one announcement for them.
    world.catch_up()
    while worker.dispatch_page():
        pass
    world.catch_up()
    notices = world.container.db.query("SELECT user_id, source, title FROM rm_announcements")
    assert [(n["user_id"], n["source"]) for n in notices] == [(str(world.owner), "schedule")]
    assert "did not run" in notices[0]["title"]


def test_delays_wait_for_the_clock(world: World) -> None:
    sid = world.schedule([{"action": "command", "payload": "say one"},
                          {"action": "command", "payload": "say two", "delay_seconds": 600}])
    world.clock.now = datetime(2030, 1, 7, 4, 0, 0, tzinfo=UTC)
    world.catch_up()
    owed = queue_stats(world.container.db, world.clock.now)  # what the operators' `scheduler` queue shows
    assert owed == {"pending": 1, "oldest": "2030-01-07T04:00:00.000000Z"}
    worker = world.worker()
    world.settle(worker)
    assert world.commands() == ["say one"]
    assert queue_stats(world.container.db, world.clock.now)["pending"] == 0  # waiting out a delay is not owed
    world.clock.now += timedelta(seconds=599)
    world.settle(worker)
    assert world.commands() == ["say one"]
    world.clock.now += timedelta(seconds=1)
    world.settle(worker)
    assert world.commands() == ["say one", "say two"]
    assert [r["status"] for r in world.runs(sid)] == ["succeeded"]


def test_operation_in_progress_fails_the_task_without_retrying(world: World) -> None:
    sid = world.schedule([{"action": "power", "payload": "restart"}, {"action": "command", "payload": "say later"}])
    request_power(world.container.app, world.owner, world.instance, "stop")  # queued, not run: the instance is busy
    world.clock.now = datetime(2030, 1, 7, 4, 0, 1, tzinfo=UTC)
    worker = world.worker()
    world.settle(worker)
    world.clock.now += timedelta(minutes=10)
    world.settle(worker)
    run = world.container.app.repository.get(run_id_for(sid, datetime(2030, 1, 7, 4, 0, tzinfo=UTC)))
    assert run.status == "failed"
    assert [(t["status"], (t["error"] or {}).get("code")) for t in run.tasks] == [
        ("failed", "operation_in_progress"), ("not_run", None)]
    assert world.container.db.query("SELECT id FROM rm_operations WHERE kind = 'restart'") == []
    assert world.commands() == []


def test_a_power_task_waits_for_its_operation(world: World) -> None:
    sid = world.schedule([{"action": "power", "payload": "stop"}, {"action": "command", "payload": "say stopped?"}],
                         only_when_running=True)
    world.clock.now = datetime(2030, 1, 7, 4, 0, 1, tzinfo=UTC)
    worker = world.worker()
    world.settle(worker)
    run_id = run_id_for(sid, datetime(2030, 1, 7, 4, 0, tzinfo=UTC))
    assert world.container.app.repository.get(run_id).tasks[0]["status"] == "running"
    world.operations()  # the stop runs; the server is stopped
    world.settle(worker)  # the worker reads the operation's end in the log
    run = world.container.app.repository.get(run_id)
    # The command fails: the server is no longer running (the run checked only_when_running when it began).
    assert [t["status"] for t in run.tasks] == ["succeeded", "failed"] and run.tasks[1]["error"]["code"] == \
        "not_running"
    # The next day the server is stopped: only_when_running skips the run.
    world.clock.now = datetime(2030, 1, 8, 4, 0, 1, tzinfo=UTC)
    world.settle(worker)
    assert [(r["status"], r["reason_code"]) for r in world.runs(sid)][-1] == ("skipped", "not_running")


def test_a_suspended_accounts_runs_are_skipped(world: World) -> None:
    sid = world.schedule(SAY)
    timers = BillingSchedule.of(3 * 86400, 7 * 86400)
    account = BillingAccount(user_id=world.owner, email="cron@example.com")
    account.record_fact("evt_unpaid", fact_from_stripe("invoice.payment_failed", {"id": "in_1"}) or {},
                        T0 - timedelta(days=8), timers)
    account.enforce(T0, timers)
    assert account.state is EnforcementState.SUSPENDED
    world.container.app.save(account)
    world.clock.now = datetime(2030, 1, 7, 4, 0, 1, tzinfo=UTC)
    world.settle(world.worker())
    assert [(r["status"], r["reason_code"]) for r in world.runs(sid)] == [("skipped", "billing_suspended")]
    assert world.commands() == []


def test_a_task_whose_worker_died_is_failed_as_interrupted_not_repeated(world: World) -> None:
    sid = world.schedule(SAY)
    world.clock.now = datetime(2030, 1, 7, 4, 0, 1, tzinfo=UTC)
    schedule: Schedule = world.container.app.repository.get(sid)
    plan = schedule.plan(world.clock.now, timedelta(minutes=5))
    assert plan is not None and plan.run_at is not None
    run = ScheduleRun.plan(run_id_for(sid, plan.run_at), schedule, "schedule", plan.run_at, world.clock.now)
    schedule.advance(plan, run.id, None)
    run.start(world.clock.now)
    run.start_task(0, world.clock.now, None)  # the intent is recorded; then the worker "dies"
    world.container.app.save(schedule, run)
    worker = world.worker()
    world.settle(worker)
    assert world.container.app.repository.get(run.id).tasks[0]["status"] == "running"  # within its lease
    world.clock.now += timedelta(minutes=3)
    world.settle(worker)
    after = world.container.app.repository.get(run.id)
    assert after.status == "failed" and after.tasks[0]["error"]["code"] == "interrupted"
    assert world.commands() == []


def test_rebuilt_schedule_and_activity_read_models_equal_the_live_ones(world: World) -> None:
    sid = world.schedule([*SAY, {"action": "backup", "delay_seconds": 30}], cron="*/30 * * * *")
    worker = world.worker()
    for minutes in (11, 40, 75, 160):
        world.clock.now = T0 + timedelta(minutes=minutes)
        world.settle(worker)
        world.operations()
        world.clock.now += timedelta(seconds=31)
        world.settle(worker)
        world.operations()
        world.settle(worker)
    schedules.revise_schedule(world.container.app, world.owner, world.owner, world.instance, sid,
                              {"enabled": False}, world.clock.now)
    record_console_command(world.container.app, world.instance, world.owner, "say rebuilt")
    record_file_write(world.container.app, world.instance, world.owner, "/ops.txt", 42)
    request_power(world.container.app, world.owner, world.instance, "stop", actor_id=world.owner)
    world.operations()
    schedules.delete_schedule(world.container.app, world.owner, world.owner, world.instance, sid)
    world.catch_up()
    actions = {r["action"] for r in world.container.db.query("SELECT action FROM rm_activity")}
    assert {"console.command", "file.write", "power.stop", "schedule.run", "schedule.delete",
            "backup.create"} <= actions
    for name in ("schedules", "activity"):
        runner: ProjectionRunner = world.container.runners[name]
        tables = [t.name for t in runner.projection.tables]
        live = {t: sorted(world.container.db.query(f"SELECT * FROM {t}"), key=str) for t in tables}
        runner.rebuild()
        rebuilt = {t: sorted(world.container.db.query(f"SELECT * FROM {t}"), key=str) for t in tables}
        assert rebuilt == live, name
    assert len(world.runs(sid)) >= 4
