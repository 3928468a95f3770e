"""The operators' side: projections with a rebuild showing progress, queues, repairs, the audit view."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import Customer, screenshot, sign_in
from tests.e2e.conftest import ADMIN_TOKEN


def test_operator_rebuilds_a_projection_and_reads_queues_repairs_and_a_stream(page: Page, customer: Customer) -> None:
    sign_in(page, customer.token)
    expect(page.locator("#nav-admin")).to_be_hidden()  # customers never see the operators' side
    page.get_by_role("button", name="Sign out").click()

    sign_in(page, ADMIN_TOKEN)
    page.get_by_role("link", name="Operators").click()
    expect(page.locator('#queues-table tr[data-name="provisioning"]')).to_be_visible()
    expect(page.locator("#repairs-message")).not_to_contain_text("could not")
    row = page.locator('#projections-table tr[data-name="instances"]')
    expect(row).to_be_visible()
    row.get_by_role("button", name="Rebuild instances").click()
    expect(page.locator("#rebuild-message")).to_contain_text(re.compile("Rebuilding instances|already"))
    expect(row).to_have_attribute("data-rebuild", "done")
    expect(row.locator(".rebuild-progress")).to_have_text(re.compile(r"Rebuilt \(\d+ events\)"))

    page.get_by_label("Stream id").fill(customer.id)
    page.get_by_role("button", name="Show events").click()
    expect(page.locator("#audit-message")).to_have_text(re.compile(r"\d+ events, oldest first\."))
    expect(page.locator("#audit-table tbody tr").first).to_contain_text("User")
    page.get_by_role("button", name="Verify chain").click()
    expect(page.locator("#audit-message")).to_have_text(re.compile(r"Chain intact: \d+ events verified\."))
    screenshot(page, "operators")


def test_operator_sees_nodes_with_capacity_and_health_and_cordons_one(page: Page) -> None:
    sign_in(page, ADMIN_TOKEN)
    page.get_by_role("link", name="Operators").click()
    row = page.locator('#nodes-table tr[data-name="local"]')
    expect(row).to_have_attribute("data-status", re.compile("ready|cordoned"))
    expect(row.locator("td").nth(2)).to_contain_text(" of ")  # memory: allocated of capacity
    expect(row.locator("td").nth(6)).not_to_have_text("—")  # the monitor has heard its agent
    if row.get_attribute("data-status") == "ready":
        row.get_by_role("button", name="Cordon local").click()
        expect(row).to_have_attribute("data-status", "cordoned")
    row.get_by_role("button", name="Uncordon local").click()
    expect(row).to_have_attribute("data-status", "ready")
