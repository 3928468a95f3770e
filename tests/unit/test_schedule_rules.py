"""The schedule's pure rules: cron and timezone checks, due times across DST changes, the timer's plan, a run's steps.

Hypothesis: the next due time is strictly after now and matches the expression in the schedule's
timezone (or is the first minute after a DST gap that swallowed a matching local time); walking a
clock forward in any steps plans every due time exactly once, never twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import IllegalTransitionError
from domain.schedule import (
    Schedule,
    ScheduleRun,
    check_tasks,
    next_due,
    normalize_cron,
    plan_due,
    run_id_for,
    zone,
)
from domain.text import TextValidationError

T0 = datetime(2024, 3, 30, 12, 0, tzinfo=UTC)
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Pacific/Chatham",
         "America/Sao_Paulo", "Europe/London"]
CRONS = ["0 4 * * *", "30 2 * * *", "*/15 * * * *", "0 */6 * * *", "15 1 * * 0", "0 0 1 * *", "45 23 * * 1-5",
         "0 3 L * *", "5 2,3 * * *", "@hourly", "@daily", "0 12 * * MON#2", "30 1 * * *"]


def _matches_naive(cron: str, local_naive: datetime) -> bool:
    """Whether a local wall time matches the expression (cronsim without a timezone: no DST rules)."""
    expanded = {"@hourly": "0 * * * *", "@daily": "0 0 * * *"}.get(cron, cron)
    return next(CronSim(expanded, local_naive - timedelta(seconds=1))) == local_naive


def _is_gap_fallback(cron: str, tz: ZoneInfo, due: datetime) -> bool:
    """`due` is the first valid minute after a DST gap in which a matching local time did not exist."""
    local = due.astimezone(tz).replace(tzinfo=None)
    probe = local - timedelta(hours=3)
    expanded = {"@hourly": "0 * * * *", "@daily": "0 0 * * *"}.get(cron, cron)
    for candidate in CronSim(expanded, probe):
        if candidate >= local:
            return False
        imaginary = candidate.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) != candidate
        if imaginary:
            return True
    return False


@given(st.sampled_from(CRONS), st.sampled_from(ZONES),
       st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31)).map(
           lambda d: d.replace(tzinfo=UTC)))
def test_next_due_is_strictly_after_now_and_matches(cron: str, timezone: str, now: datetime) -> None:
    due = next_due(cron, timezone, now)
    assert due is not None and due > now and due.tzinfo is UTC
    tz = zone(timezone)
    local = due.astimezone(tz).replace(tzinfo=None)
    assert _matches_naive(cron, local) or _is_gap_fallback(cron, tz, due), (cron, timezone, now, due)
    # Nothing due in between: the next due time after any instant before `due` is `due` itself.
    assert next_due(cron, timezone, due - timedelta(seconds=1)) == due


@given(st.sampled_from(CRONS), st.sampled_from(ZONES),
       st.datetimes(min_value=datetime(2023, 1, 1), max_value=datetime(2026, 12, 31)).map(
           lambda d: d.replace(tzinfo=UTC)),
       st.lists(st.integers(min_value=1, max_value=3 * 86400), min_size=1, max_size=40))
def test_a_clock_walking_forward_plans_each_due_time_once(cron: str, timezone: str, start: datetime,
                                                         steps: list[int]) -> None:
    """Whatever the steps of the clock (a worker waking late, a long downtime), every due time is planned exactly
    once (run or counted as missed), in order, and a run is never planned twice."""
    grace = timedelta(minutes=5)
    cursor, now = start, start
    planned: list[datetime] = []
    missed = 0
    runs: list[datetime] = []
    for step in steps:
        now += timedelta(seconds=step)
        plan = plan_due(cron, timezone, cursor, now, grace)
        if plan is None:
            continue
        assert plan.through > cursor and plan.through <= now
        assert plan.next_run_at is None or plan.next_run_at > now
        if plan.run_at is not None:
            assert now - plan.run_at <= grace and plan.run_at == plan.through
            runs.append(plan.run_at)
        missed += plan.missed_count
        planned.append(plan.through)
        cursor = plan.through
    assert len(runs) == len(set(runs)) and runs == sorted(runs)
    expected = []
    at = start
    while (at := next_due(cron, timezone, at)) is not None and at <= cursor:
        expected.append(at)
    assert len(runs) + missed == len(expected)
    assert set(runs) <= set(expected)


def test_dst_gap_and_overlap_in_berlin() -> None:
    # 2024-03-31: 02:00 -> 03:00. A 02:30 job runs at 03:00 local (01:00 UTC), once.
    assert next_due("30 2 * * *", "Europe/Berlin", datetime(2024, 3, 30, 12, tzinfo=UTC)) == \
        datetime(2024, 3, 31, 1, 0, tzinfo=UTC)
    # 2024-10-27: 03:00 -> 02:00. A 02:30 job runs once, at the first 02:30 (00:30 UTC), not again an hour later.
    first = next_due("30 2 * * *", "Europe/Berlin", datetime(2024, 10, 26, 12, tzinfo=UTC))
    assert first == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
    assert next_due("30 2 * * *", "Europe/Berlin", first) == datetime(2024, 10, 28, 1, 30, tzinfo=UTC)
    # A wildcard-minute expression fires at every matching instant, both passes of the repeated hour included.
    dues = []
    at = datetime(2024, 10, 26, 23, 59, tzinfo=UTC)
    for _ in range(4):
        at = next_due("*/30 2 * * *", "Europe/Berlin", at)
        dues.append(at)
    assert dues == [datetime(2024, 10, 27, h, m, tzinfo=UTC) for h, m in ((0, 0), (0, 30), (1, 0), (1, 30))]


def test_timezones_move_the_due_time() -> None:
    now = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
    assert next_due("0 4 * * *", "UTC", now) == datetime(2024, 1, 16, 4, 0, tzinfo=UTC)
    assert next_due("0 4 * * *", "America/New_York", now) == datetime(2024, 1, 16, 9, 0, tzinfo=UTC)
    assert next_due("0 4 * * *", "Asia/Kolkata", now) == datetime(2024, 1, 15, 22, 30, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["", "* * * *", "* * * * * *", "61 * * * *", "* 25 * * *", "0 0 31 2 *", "x y z a b",
                                 "@often", "0 4 * * *\x00", "0 " * 60])
def test_bad_cron_is_a_validation_error_naming_the_field(bad: str) -> None:
    with pytest.raises(TextValidationError) as caught:
        normalize_cron(bad)
    assert caught.value.field == "cron" and caught.value.code == "validation_error"


def test_good_cron_is_normalized() -> None:
    assert normalize_cron("  0   4 * *  * ") == "0 4 * * *"
    assert normalize_cron("@daily") == "@daily"
    assert normalize_cron("0 12 * * MON#2") == "0 12 * * MON#2"


@pytest.mark.parametrize("bad", ["", "Mars/Base", "../../etc/passwd", "/etc/localtime", "UTC\x00", "x" * 65])
def test_bad_timezone_is_a_validation_error_naming_the_field(bad: str) -> None:
    with pytest.raises(TextValidationError) as caught:
        zone(bad)
    assert caught.value.field == "timezone"


@pytest.mark.parametrize(("tasks", "field"), [
    ([], "tasks"),
    ([{"action": "power", "payload": "start"}] * 11, "tasks"),
    ([{"action": "reboot", "payload": None}], "tasks.0.action"),
    ([{"action": "power", "payload": "explode"}], "tasks.0.payload"),
    ([{"action": "command", "payload": "say hi"}, {"action": "command", "payload": "say\nop me"}], "tasks.1.payload"),
    ([{"action": "command", "payload": ""}], "tasks.0.payload"),
    ([{"action": "backup", "payload": "now"}], "tasks.0.payload"),
    ([{"action": "backup", "payload": None, "delay_seconds": 901}], "tasks.0.delay_seconds"),
    ([{"action": "backup", "payload": None, "delay_seconds": -1}], "tasks.0.delay_seconds"),
    ([{"action": "backup", "payload": None, "delay_seconds": True}], "tasks.0.delay_seconds"),
])
def test_bad_tasks_name_the_task_and_field(tasks: list, field: str) -> None:
    with pytest.raises(TextValidationError) as caught:
        check_tasks(tasks)
    assert caught.value.field == field


def test_plan_runs_the_latest_within_grace_and_counts_the_rest_missed() -> None:
    cursor = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
    grace = timedelta(minutes=5)
    # Down for 3 hours, back 2 minutes after an hourly due time: that one runs, the two before are missed.
    plan = plan_due("0 * * * *", "UTC", cursor, datetime(2024, 1, 1, 3, 2, tzinfo=UTC), grace)
    assert plan is not None and plan.run_at == datetime(2024, 1, 1, 3, 0, tzinfo=UTC)
    assert (plan.missed_count, plan.missed_from, plan.missed_through) == (
        2, datetime(2024, 1, 1, 1, 0, tzinfo=UTC), datetime(2024, 1, 1, 2, 0, tzinfo=UTC))
    assert plan.next_run_at == datetime(2024, 1, 1, 4, 0, tzinfo=UTC)
    # Back 10 minutes after it: all three are missed, none runs.
    plan = plan_due("0 * * * *", "UTC", cursor, datetime(2024, 1, 1, 3, 10, tzinfo=UTC), grace)
    assert plan is not None and plan.run_at is None and plan.missed_count == 3
    assert plan.through == datetime(2024, 1, 1, 3, 0, tzinfo=UTC)
    # Nothing due yet.
    assert plan_due("0 * * * *", "UTC", cursor, datetime(2024, 1, 1, 0, 59, tzinfo=UTC), grace) is None
    # Very far behind: the count says "at least" the cap, and the latest due time is still found.
    plan = plan_due("* * * * *", "UTC", cursor, datetime(2024, 2, 1, 0, 0, 30, tzinfo=UTC), grace)
    assert plan is not None and plan.run_at == datetime(2024, 2, 1, 0, 0, tzinfo=UTC) and plan.missed_count >= 9999


def _schedule(now: datetime = T0, **overrides: object) -> Schedule:
    fields: dict = {"instance_id": UUID(int=7), "owner_id": UUID(int=8), "name": "nightly", "cron": "0 4 * * *",
                    "timezone": "UTC", "only_when_running": False, "enabled": True,
                    "tasks": [{"action": "command", "payload": "say hi"}], "now": now, "actor_id": UUID(int=8)}
    return Schedule.define(**(fields | overrides))


def test_pausing_and_resuming_never_plans_the_paused_time() -> None:
    schedule = _schedule()
    assert schedule.next_run_at == datetime(2024, 3, 31, 4, 0, tzinfo=UTC)
    assert schedule.revise(T0 + timedelta(hours=1), None, enabled=False)
    assert schedule.next_run_at is None and schedule.plan(T0 + timedelta(days=3), timedelta(minutes=5)) is None
    resumed = T0 + timedelta(days=3, hours=1)
    assert schedule.revise(resumed, None, enabled=True)
    assert schedule.next_run_at == datetime(2024, 4, 3, 4, 0, tzinfo=UTC)
    assert schedule.plan(resumed + timedelta(minutes=1), timedelta(minutes=5)) is None
    # Renaming keeps the timer; an unchanged value records nothing.
    assert schedule.revise(resumed, None, name="renamed") and schedule.next_run_at == datetime(2024, 4, 3, 4, 0,
                                                                                               tzinfo=UTC)
    assert not schedule.revise(resumed, None, name="renamed")


def test_the_timer_cannot_move_back_over_a_due_time() -> None:
    schedule = _schedule()
    plan = schedule.plan(datetime(2024, 3, 31, 4, 0, 5, tzinfo=UTC), timedelta(minutes=5))
    assert plan is not None and plan.run_at == datetime(2024, 3, 31, 4, 0, tzinfo=UTC)
    schedule.advance(plan, run_id_for(schedule.id, plan.run_at), None)
    with pytest.raises(IllegalTransitionError):
        schedule.advance(plan, run_id_for(schedule.id, plan.run_at), None)
    assert schedule.plan(datetime(2024, 3, 31, 4, 3, tzinfo=UTC), timedelta(minutes=5)) is None


def test_run_ids_are_deterministic_per_schedule_and_due_time() -> None:
    due = datetime(2024, 3, 31, 4, 0, tzinfo=UTC)
    assert run_id_for(UUID(int=1), due) == run_id_for(UUID(int=1), due.astimezone(ZoneInfo("Asia/Tokyo")))
    assert run_id_for(UUID(int=1), due) != run_id_for(UUID(int=2), due)
    assert run_id_for(UUID(int=1), due) != run_id_for(UUID(int=1), due + timedelta(minutes=1))


def test_a_run_steps_through_delays_failures_and_continue_on_failure() -> None:
    schedule = _schedule(tasks=[
        {"action": "command", "payload": "say 1", "delay_seconds": 0, "continue_on_failure": True},
        {"action": "command", "payload": "say 2", "delay_seconds": 60},
        {"action": "backup", "payload": None, "delay_seconds": 0},
    ])
    run = ScheduleRun.plan(UUID(int=99), schedule, "manual", T0, T0, actor_id=UUID(int=8))
    assert run.next_step(T0).kind == "start"
    run.start(T0)
    assert run.next_step(T0).kind == "task" and run.next_step(T0).index == 0
    run.start_task(0, T0, None)
    assert run.next_step(T0 + timedelta(seconds=5)).kind == "wait"
    assert run.next_step(T0 + timedelta(seconds=121)).kind == "interrupted"
    run.fail_task(0, T0 + timedelta(seconds=1), "not_running", "down")  # continue_on_failure: go on
    assert run.next_step(T0 + timedelta(seconds=30)).kind == "wait"
    later = T0 + timedelta(seconds=61)
    assert run.next_step(later).kind == "task" and run.next_step(later).index == 1
    run.start_task(1, later, None)
    run.fail_task(1, later, "bad_command", "no")  # not continue_on_failure: the run stops
    assert run.next_step(later).kind == "finish"
    run.finish(later)
    assert run.status == "failed" and [t["status"] for t in run.tasks] == ["failed", "failed", "not_run"]
    assert run.reason == {"code": "not_running", "message": "down"}
    with pytest.raises(IllegalTransitionError):
        run.start_task(2, later, None)
