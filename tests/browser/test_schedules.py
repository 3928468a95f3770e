"""Schedules and the activity log in the portal: create a schedule with a chain of tasks, a bad cron expression
answered by a message naming the field, edit, pause and resume, run now and see every task's result, the activity log
naming who did what, and delete."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Customer, create_customer, screenshot, sign_in
from tests.e2e.conftest import ADMIN_TOKEN, Server
from tests.e2e.test_provisioning import poll


@pytest.fixture(scope="module")
def owner(portal_server: Server) -> Iterator[tuple[Customer, httpx.Client, str]]:
    """A customer with one running game server, made through the API."""
    with portal_server.client(ADMIN_TOKEN) as admin:
        customer = create_customer(admin, "cron")
    with portal_server.client(customer.token) as api:
        accepted = api.post("/api/instances", headers={"Idempotency-Key": "cron-1"},
                            json={"kind": "game", "name": "cronbox", "template": "minecraft"})
        assert accepted.status_code == 202, accepted.text
        iid = accepted.json()["instance_id"]
        poll(lambda: api.get(f"/api/instances/{iid}").json(),
             lambda i: i["status"] == "running" and i["pending_operation_id"] is None)
        yield customer, api, iid


def test_schedule_create_edit_pause_run_now_activity_and_delete(page: Page,
                                                                owner: tuple[Customer, httpx.Client, str]) -> None:
    customer, api, iid = owner
    sign_in(page, customer.token)
    page.get_by_role("button", name="Manage cronbox").click()
    detail = page.locator("#server-detail")
    detail.get_by_role("button", name="Schedules", exact=True).click()
    tab = page.locator("#tab-schedules")
    expect(tab.locator(".schedules-message")).to_contain_text("No schedules yet")

    # Create: a bad cron expression first, answered by a message that names the field.
    tab.get_by_role("button", name="New schedule").click()
    form = tab.locator("form.schedule-form")
    form.get_by_label("Name").fill("morning greeting")
    form.get_by_label("Cron expression").fill("every morning")
    form.get_by_label("Timezone").fill("Europe/Berlin")
    form.get_by_label("Command").fill("say good morning from a schedule")
    form.get_by_role("button", name="Add task").click()
    second = form.locator("li.task-row").nth(1)
    second.get_by_label("Action").select_option("backup")
    expect(second.get_by_label("Command")).to_be_hidden()
    second.get_by_label("Wait before (s)").fill("2")
    form.get_by_role("button", name="Create schedule").click()
    expect(form.get_by_role("alert")).to_contain_text("cron:")
    form.get_by_label("Cron expression").fill("0 4 * * *")
    form.get_by_role("button", name="Create schedule").click()
    expect(tab.locator(".schedules-message")).to_have_text("Schedule created.")
    row = tab.locator("tbody tr").filter(has_text="morning greeting")
    expect(row).to_contain_text("0 4 * * *")
    expect(row).to_contain_text("Europe/Berlin")
    expect(row).to_contain_text("backup")
    schedule = api.get(f"/api/instances/{iid}/schedules").json()["items"][0]
    assert schedule["next_run_at"] and schedule["tasks"][1] == {"action": "backup", "payload": None,
                                                                "delay_seconds": 2, "continue_on_failure": False}

    # Edit: the form comes back filled in; a new time is saved with PATCH.
    row.get_by_role("button", name="Edit morning greeting").click()
    form = tab.locator("form.schedule-form")
    expect(form.get_by_label("Cron expression")).to_have_value("0 4 * * *")
    expect(form.locator("li.task-row")).to_have_count(2)
    form.get_by_label("Cron expression").fill("30 5 * * 1-5")
    form.get_by_role("button", name="Save schedule").click()
    expect(tab.locator(".schedules-message")).to_have_text("Schedule saved.")
    expect(row).to_contain_text("30 5 * * 1-5")
    assert api.get(f"/api/instances/{iid}/schedules").json()["items"][0]["cron"] == "30 5 * * 1-5"

    # Pause and resume.
    row.get_by_role("button", name="Pause morning greeting").click()
    expect(row).to_contain_text("(paused)")
    assert api.get(f"/api/instances/{iid}/schedules").json()["items"][0]["next_run_at"] is None
    row.get_by_role("button", name="Resume morning greeting").click()
    expect(row).not_to_contain_text("(paused)")

    # Run now: the runs list shows the run end, each task's result.
    row.get_by_role("button", name="Run morning greeting now").click()
    runs = page.locator(".run-list")
    expect(runs.locator('li.run[data-status="succeeded"]')).to_have_count(1, timeout=30_000)
    expect(runs.locator(".run-tasks li")).to_have_text([re.compile("good morning.*done"), re.compile("backup: done")])
    expect(row).to_contain_text("Succeeded")
    screenshot(page, "schedules")

    # The activity log names who did what.
    detail.get_by_role("button", name="Activity", exact=True).click()
    activity = page.locator("#tab-activity")
    expect(activity.locator('tr[data-action="schedule.run"]')).to_contain_text("run now")
    expect(activity.locator('tr[data-action="schedule.create"]')).to_contain_text(customer.email)
    expect(activity.locator('tr[data-action="instance.create"]')).to_contain_text(customer.email)
    screenshot(page, "activity")

    # Delete, after a confirmation.
    detail.get_by_role("button", name="Schedules", exact=True).click()
    row.get_by_role("button", name="Delete morning greeting").click()
    page.locator("#confirm").get_by_role("button", name="Delete schedule").click()
    expect(tab.locator(".schedules-message")).to_have_text("\N{LEFT DOUBLE QUOTATION MARK}morning greeting"
                                                           "\N{RIGHT DOUBLE QUOTATION MARK} is deleted.")
    expect(tab.locator("tbody tr")).to_have_count(0)
    assert api.get(f"/api/instances/{iid}/schedules").json()["items"] == []
