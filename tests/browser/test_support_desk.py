"""The support desk in a real browser: a customer opens a ticket with an attachment; staff find it on the desk,
read the triage, add an internal note, assign it, reply, close and reopen it; the customer reads the reply but
never the note; the operators page shows the controller's soak verdict beside its mode."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import Customer, screenshot, sign_in
from tests.e2e.conftest import ADMIN_TOKEN

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def test_staff_work_a_ticket_on_the_desk(page: Page, customer: Customer, admin: httpx.Client) -> None:
    sign_in(page, customer.token)
    expect(page.locator("#nav-desk")).to_be_hidden()
    page.get_by_role("link", name="Support").click()
    page.get_by_label("Subject").fill("World will not load")
    page.get_by_label("Message", exact=True).fill("It hangs at 'Loading terrain'. Screenshot attached.")
    page.get_by_label("Attachments (optional, up to 10 MiB each)").set_input_files(
        {"name": "hang.png", "mimeType": "image/png", "buffer": PNG})
    page.get_by_role("button", name="Send ticket").click()
    expect(page.locator("#support-message")).to_have_text(re.compile(r"Ticket ZLH-\d{8}-\d{4} opened"))
    number = re.search(r"ZLH-\d{8}-\d{4}", page.locator("#support-message").inner_text()).group(0)
    page.get_by_role("button", name="Sign out").click()

    sign_in(page, ADMIN_TOKEN)
    page.get_by_role("link", name="Desk").click()
    page.get_by_label("Search tickets").fill(customer.email)
    page.get_by_role("button", name="Search").click()
    row = page.locator(f'#desk-table tr[data-number="{number}"]')
    expect(row).to_be_visible()
    expect(page.locator("#desk-table tbody tr")).to_have_count(1)  # the search ran on the server
    row.get_by_role("button", name=f"Open ticket {number}").click()
    ticket = page.locator("#desk-ticket")
    expect(ticket.get_by_role("heading", name=f"{number}: World will not load")).to_be_visible()
    expect(page.locator("#desk-triage")).to_contain_text("good_standing")
    expect(ticket.get_by_role("button", name="Download hang.png")).to_be_visible()

    page.get_by_label("Reply or internal note").fill("Customer is on the old plan; be generous.")
    page.get_by_role("button", name="Add internal note").click()
    expect(page.locator("#desk-ticket-message")).to_have_text("Internal note added.")
    expect(ticket.locator('li[data-kind="note"]')).to_contain_text("be generous")

    me = admin.get("/api/me").json()
    page.get_by_label("Assignee").select_option(label=me["email"])
    page.get_by_role("button", name="Assign", exact=True).click()
    expect(page.locator("#desk-ticket-message")).to_have_text("Assignment saved.")
    expect(ticket.locator('li[data-kind="event"]')).to_contain_text(f"assigned to {me['email']}")

    page.get_by_label("Reply or internal note").fill("Please delete the region file r.0.0.mca and restart.")
    page.get_by_role("button", name="Send reply").click()
    expect(page.locator("#desk-ticket-message")).to_have_text("Reply sent to the customer.")
    expect(page.locator("#desk-ticket-status")).to_contain_text("Waiting on customer")
    page.get_by_role("button", name="Close ticket").click()
    expect(page.locator("#desk-ticket-status")).to_contain_text("Status: Closed")
    page.get_by_role("button", name="Reopen ticket").click()
    expect(page.locator("#desk-ticket-status")).to_contain_text("Status: Open")
    screenshot(page, "support-desk")

    page.get_by_role("link", name="Operators").click()
    expect(page.locator("#soak-verdict")).to_have_text(
        re.compile(r"^\d+ Level 1 repairs would have run; none touched a suspended server"))
    expect(page.locator('#soak-table tr[data-kind="edge_republish"]')).to_be_visible()
    expect(page.locator("#controller-summary")).to_contain_text("Mode: dry-run")
    page.get_by_role("button", name="Sign out").click()

    sign_in(page, customer.token)
    page.get_by_role("link", name="Support").click()
    page.get_by_role("button", name=f"Open ticket {number}").click()
    detail = page.locator("#ticket-detail")
    expect(detail).to_contain_text("Please delete the region file")
    expect(detail).to_contain_text("ZLH Support")
    expect(detail).not_to_contain_text("be generous")
    expect(detail).not_to_contain_text(me["email"])
    page.get_by_label("Reply", exact=True).fill("Done, it loads now. Thanks!")
    page.get_by_role("button", name="Send reply").click()
    expect(page.locator("#ticket-reply-message")).to_have_text("Reply sent.")
    expect(page.locator("#ticket-status")).to_have_text("Status: Open")
    screenshot(page, "support-customer-ticket")
