"""The schedules process manager (`zlh worker schedules`; in-process under `zlh serve`).

Durable timers from the log. The schedules read model says which schedules are due
(`next_run_at` has come) and which runs have something to do; the worker re-reads the
aggregates before deciding anything, so a read model that lags can only make it look, never act
twice:

- **At most once per due time.** For a due schedule it plans, purely (`Schedule.plan`), and
  appends in ONE save the schedule's `TimerAdvanced` (every due time up to the latest handled)
  and the runs it makes, whose ids derive from the schedule and the due time. Two workers, or a
  worker and its restarted self, collide on the schedule's version and on the run's id: exactly
  one save wins; the loser reloads and finds nothing due.
- **Missed runs.** The latest due time runs when it is at most the grace window old (a worker
  back from downtime runs it once at start-up); every other due time it slept through is recorded
  once, as one `missed` run with the count.
- **Tasks** run one after another, each after its delay, through the use cases everyone uses:
  power and backup as operations (`request_power`, `request_backup`: the billing gates, one
  operation at a time; the operation's Idempotency-Key derives from the run and the task, so asking
  again finds the same operation), commands through the node's console. Each task's intent is
  recorded before its effect and its outcome after; a task whose outcome is unknown (its worker
  died while sending a command, or before asking for an operation) is failed as `interrupted`
  once its lease has passed, never repeated. A task waits for its operation to end (`operation_timeout`
  at most). A refusal (`operation_in_progress`, `backups_blocked`, `illegal_transition`, a node
  error) fails the task with that code; nothing is retried.
- **Checks when a run starts:** the server gone (`instance_deleted`, and the schedule is deleted),
  the account suspended (`billing_suspended`), `only_when_running` and the server not running
  (`not_running`), the previous run of the schedule still under way (`previous_run_active`): the run is
  `skipped` with that reason.
- **Telling the customer:** a run that ends `failed` or `missed` publishes an announcement addressed
  to the owner (at most one per schedule and UTC day: its id derives from both), and the
  notifications worker emails it. Effects are keyed by the events that cause them, handled from the
  log, so a crash or a replay neither loses nor repeats them.
- **Servers deleted:** `Instance.DeletionRequested` deletes the instance's schedules.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Notification

from domain.announcement import Announcement
from domain.billing import EnforcementState
from domain.errors import DomainError
from domain.ids import derive, operation_id_for_key
from domain.instance import Instance
from domain.lifecycle import InstanceStatus
from domain.operation import Operation, Phase
from domain.schedule import TASK_LEASE, Schedule, ScheduleRun, operation_key, run_id_for
from projections import schedules as schedules_view
from services.billing import recorded_state
from services.infrastructure.database import ReadModelDB
from services.infrastructure.log_following import LogFollower, Wakeup
from services.infrastructure.store import ZLH
from services.lifecycle import request_backup, request_power
from services.ports import DriverError, InstanceDriver, InstanceSpec
from services.quotas import UNLIMITED, Quotas

log = logging.getLogger(__name__)

POSITION = "scheduler"  # not "schedules": that is the read model's
TOPICS = frozenset({
    Instance.DeletionRequested.TOPIC, Operation.Succeeded.TOPIC, Operation.Failed.TOPIC,
    ScheduleRun.Planned.TOPIC, ScheduleRun.Finished.TOPIC, ScheduleRun.Missed.TOPIC,
})
#: Runs that wait for an operation are looked at when it ends (its end in the log names the run through the
#: operation's Idempotency-Key) and, as a safety net, this often.
WAITING_CHECK_EVERY = 5.0
#: How long a failure notice stays in the portal.
NOTICE_FOR = timedelta(days=3)


def notice_id(schedule_id: UUID, day: str) -> UUID:
    """At most one failure announcement per schedule and UTC day."""
    return derive("schedule-notice", schedule_id, day)


class ScheduleManager:
    def __init__(self, app: ZLH, db: ReadModelDB, driver: InstanceDriver, grace: float = 300.0,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC), operation_timeout: float = 3600.0,
                 lease: timedelta = TASK_LEASE, quotas: Quotas = UNLIMITED) -> None:
        self.app, self.db, self.driver, self.quotas = app, db, driver, quotas
        self.grace = timedelta(seconds=grace)
        self.now = now
        self.operation_timeout = timedelta(seconds=operation_timeout)
        self.lease = lease
        self.stop_event = threading.Event()
        self.follower = LogFollower(POSITION, app, db, self._dispatch, topics=TOPICS, after_drain=self.sweep)
        self._last_waiting_check = float("-inf")

    def position(self) -> int:
        return self.follower.position()

    def run(self, wakeup: Wakeup) -> None:
        self.follower.run(self.stop_event, wakeup)

    # Following the log.

    def dispatch_page(self) -> int:
        return self.follower.process_page()

    def _dispatch(self, notification: Notification) -> None:
        topic = notification.topic
        if topic == Instance.DeletionRequested.TOPIC:
            self.delete_schedules_of(notification.originator_id)
        elif topic in (Operation.Succeeded.TOPIC, Operation.Failed.TOPIC):
            run_id = run_of_operation(self.app.find(notification.originator_id, Operation))
            if run_id is not None:
                self.advance(run_id)
        elif topic == ScheduleRun.Planned.TOPIC:
            self.advance(notification.originator_id)
        else:  # a run ended: tell the owner if it failed or was missed
            self.notify(notification.originator_id)

    # The durable timer.

    def sweep(self) -> None:
        """Fire the schedules that are due; move on the runs that have something to do."""
        now = self.now()
        for row in schedules_view.due(self.db, now):
            self.fire(UUID(row["id"]))
        waiting = time.monotonic() - self._last_waiting_check >= WAITING_CHECK_EVERY
        if waiting:
            self._last_waiting_check = time.monotonic()
        for row in schedules_view.active_runs(self.db, self.now(), waiting):
            self.advance(UUID(row["id"]))

    def fire(self, schedule_id: UUID) -> list[UUID]:
        """Handle the schedule's due times up to now (at most once each); the runs made, [] if none was due."""
        for _ in range(20):
            schedule = self.app.find(schedule_id, Schedule)
            if schedule is None:
                return []
            now = self.now()
            plan = schedule.plan(now, self.grace)
            if plan is None:
                return []
            instance = self.app.find(schedule.instance_id, Instance)
            if instance is None or instance.status in (InstanceStatus.DELETING, InstanceStatus.DELETED):
                self._delete(schedule)
                return []
            runs: list[ScheduleRun] = []
            if plan.missed_count and plan.missed_from is not None and plan.missed_through is not None:
                missed = ScheduleRun.plan(run_id_for(schedule.id, plan.missed_from), schedule, "schedule",
                                          due_at=plan.missed_from, now=now)
                missed.miss(plan.missed_from, plan.missed_through, plan.missed_count, now)
                runs.append(missed)
            run = None
            if plan.run_at is not None:
                run = ScheduleRun.plan(run_id_for(schedule.id, plan.run_at), schedule, "schedule",
                                       due_at=plan.run_at, now=now)
                previous = self.app.find(schedule.last_run_id, ScheduleRun) if schedule.last_run_id else None
                if previous is not None and previous.is_active:
                    run.skip("previous_run_active", f"the run due at {_fmt(previous.due_at)} is still under way", now)
                runs.append(run)
            schedule.advance(plan, run.id if run else None, runs[0].id if plan.missed_count else None)
            try:
                self.app.save(schedule, *runs)
            except IntegrityError:
                continue  # another worker (or an edit) moved the schedule first: look again
            log.info("schedule %s: %s", schedule.id, ", ".join(f"{r.status} run {r.id} due {_fmt(r.due_at)}"
                                                                 for r in runs))
            for made in runs:
                if made.is_active:
                    self.advance(made.id)
            return [r.id for r in runs]
        raise RuntimeError(f"schedule {schedule_id}: too much contention")

    # Runs.

    def advance(self, run_id: UUID) -> None:
        """Do what the run needs now, step by step, until it waits or ends. Never raises for a task's failure."""
        for _ in range(200):
            run = self.app.find(run_id, ScheduleRun)
            if run is None:
                return
            now = self.now()
            step = run.next_step(now, self.lease)
            if step.kind in ("done", "wait"):
                return
            if step.kind == "start":
                self._start(run, now)
            elif step.kind == "finish":
                run.finish(now)
            elif step.kind == "interrupted":
                assert step.index is not None
                run.fail_task(step.index, now, "interrupted", "the worker running this task stopped before it "
                              "recorded the outcome; the task is not repeated")
            elif step.kind == "await_operation":
                assert step.index is not None
                if not self._operation_outcome(run, step.index, now):
                    return
            elif step.kind == "task":
                assert step.index is not None
                self._task(run, step.index, now)  # saves its intent and outcome itself
                continue  # look again (another worker may have started it first)
            try:
                self.app.save(run)
            except IntegrityError:
                continue  # another worker moved the run: look again
        log.warning("run %s: still busy after 200 steps; left for the next pass", run_id)

    def _start(self, run: ScheduleRun, now: datetime) -> None:
        instance = self.app.find(run.instance_id, Instance)
        schedule = self.app.find(run.schedule_id, Schedule)
        if instance is None or instance.status in (InstanceStatus.DELETING, InstanceStatus.DELETED):
            run.skip("instance_deleted", "the server is deleted", now)
            if schedule is not None:
                self._delete(schedule)
        elif schedule is None or schedule.deleted:
            run.skip("schedule_deleted", "the schedule was deleted before the run began", now)
        elif recorded_state(self.app, run.owner_id) is EnforcementState.SUSPENDED:
            run.skip("billing_suspended", "the account is suspended for non-payment: schedules do not run until "
                     "the invoice is paid", now)
        elif run.only_when_running and instance.status is not InstanceStatus.RUNNING:
            run.skip("not_running", f"only while running, and the server is {instance.status.value}", now)
        else:
            run.start(now)

    def _task(self, run: ScheduleRun, index: int, now: datetime) -> bool:
        """Record the intent, act, record the outcome; False if another worker recorded the intent first."""
        task = run.tasks[index]
        action = task["action"]
        key = operation_key(run.id, index)
        operation_id = operation_id_for_key(run.owner_id, key) if action in ("power", "backup") else None
        run.start_task(index, now, operation_id, self.lease)
        try:
            self.app.save(run)
        except IntegrityError:
            return False
        origin = f"schedule_run:{run.id}"
        actor = run.actor_id or run.owner_id
        try:
            if action == "power":
                request_power(self.app, run.owner_id, run.instance_id, task["payload"], key, actor_id=actor,
                              origin=origin)
            elif action == "backup":
                request_backup(self.app, run.owner_id, run.instance_id, key, self.quotas, actor_id=actor,
                               origin=origin)
            else:
                self._send_command(run.instance_id, task["payload"])
                run.succeed_task(index, self.now(), {})
        except (DomainError, DriverError) as exc:
            run.fail_task(index, self.now(), exc.code, exc.message)
        except Exception as exc:  # a bug must end the task, not stop the worker
            log.exception("run %s task %d failed unexpectedly", run.id, index)
            run.fail_task(index, self.now(), "internal", f"the task failed unexpectedly ({type(exc).__name__})")
        if run.tasks[index]["status"] != "running":
            try:
                self.app.save(run)
            except IntegrityError:
                log.warning("run %s task %d: its outcome could not be recorded (the run changed meanwhile)",
                            run.id, index)
        return True

    def _send_command(self, instance_id: UUID, line: str) -> None:
        instance = self.app.find(instance_id, Instance)
        if instance is None or instance.status is not InstanceStatus.RUNNING:
            status = instance.status.value if instance is not None else "deleted"
            raise DriverError("not_running", f"the console needs a running server; this one is {status}")
        spec = InstanceSpec(instance.id, instance.kind.value, instance.template, instance.edge_name)
        self.driver.send_console(spec, line)

    def _operation_outcome(self, run: ScheduleRun, index: int, now: datetime) -> bool:
        """Record the outcome of the task's operation if it has one; False while it has none yet."""
        task = run.tasks[index]
        operation = self.app.find(task["operation_id"], Operation)
        if operation is None:
            if now < task["started_at"] + self.lease:
                return False  # its worker may be asking for it right now
            run.fail_task(index, now, "interrupted", "the worker running this task stopped before it asked for the "
                          "operation; the task is not repeated")
            return True
        if operation.phase is Phase.SUCCEEDED:
            run.succeed_task(index, now, {"operation_id": str(operation.id)})
        elif operation.phase is Phase.FAILED:
            error = operation.error or {"code": "failed", "message": "the operation failed"}
            run.fail_task(index, now, error["code"], error["message"])
        elif now >= task["started_at"] + self.operation_timeout:
            run.fail_task(index, now, "operation_timeout", f"operation {operation.id} did not end within "
                          f"{int(self.operation_timeout.total_seconds())} s; the run goes on without it")
        else:
            return False
        return True

    # Effects from the log.

    def notify(self, run_id: UUID) -> None:
        """A failed or missed run: an announcement for the owner (one per schedule and UTC day)."""
        run = self.app.find(run_id, ScheduleRun)
        if run is None or run.status not in ("failed", "missed") or run.finished_at is None:
            return
        instance = self.app.find(run.instance_id, Instance)
        server = instance.name if instance is not None else "your server"
        when = _fmt(run.due_at)
        if run.status == "missed":
            count = (run.missed or {}).get("count", 1)
            title = f"Schedule “{run.schedule_name}” did not run"
            body = (f"The schedule “{run.schedule_name}” on {server} missed {count} due time"
                    f"{'s' if count != 1 else ''} (from {when}) while our scheduler was not running. They were "
                    "not run late. The schedule's runs list shows each one.")
        else:
            index, failed = next(((i + 1, t) for i, t in enumerate(run.tasks) if t["status"] == "failed"), (0, None))
            reason = failed["error"] if failed else {"code": "failed", "message": "a task failed"}
            title = f"Schedule “{run.schedule_name}” failed"
            body = (f"The run of “{run.schedule_name}” on {server} due at {when} failed at task {index} "
                    f"({failed['action'] if failed else 'unknown'}): {reason['message']} (code {reason['code']}). "
                    "The schedule's runs list shows every task.")
        day = run.finished_at.astimezone(UTC).strftime("%Y-%m-%d")
        announcement = Announcement._create(
            Announcement.Published, id=notice_id(run.schedule_id, day), level="warning", title=title, body=body,
            user_id=run.owner_id, starts_at=None, ends_at=run.finished_at + NOTICE_FOR, source="schedule")
        with contextlib.suppress(IntegrityError):  # already told today (or a replay)
            self.app.save(announcement)

    def delete_schedules_of(self, instance_id: UUID) -> None:
        """The server is being deleted: so are its schedules."""
        for schedule_id in schedules_view.for_instance_ids(self.db, str(instance_id)):
            schedule = self.app.find(UUID(schedule_id), Schedule)
            if schedule is not None:
                self._delete(schedule)

    def _delete(self, schedule: Schedule) -> None:
        for _ in range(20):
            if not schedule.delete(None, "instance_deleted"):
                return
            try:
                self.app.save(schedule)
                log.info("schedule %s deleted with its server", schedule.id)
                return
            except IntegrityError:
                reloaded = self.app.find(schedule.id, Schedule)
                if reloaded is None:
                    return
                schedule = reloaded


def run_of_operation(operation: Operation | None) -> UUID | None:
    """The run whose task asked for `operation` (its Idempotency-Key says so: `operation_key`), if any."""
    if operation is None or not operation.request_key.startswith("schedule-run:"):
        return None
    try:
        return UUID(operation.request_key.split(":")[1])
    except (IndexError, ValueError):
        return None


def _fmt(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
