"""Account-wide screens: notes conflict across two browser contexts, support tickets, announcements,
and the billing banner after a signed Stripe webhook for a customer an operator linked in the portal."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable

import httpx
import stripe
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import WEBHOOK_SECRET, Customer, create_customer, screenshot, sign_in
from tests.e2e.conftest import ADMIN_TOKEN, Server


def test_notes_conflict_across_two_browser_contexts(new_context: Callable[..., BrowserContext],
                                                    customer: Customer, portal_server: Server) -> None:
    first, second = new_context().new_page(), new_context().new_page()
    for page in (first, second):
        sign_in(page, customer.token)
        page.get_by_role("link", name="Notes").click()
        expect(page.locator("#notes-message")).to_contain_text("Your notepad is empty")
        expect(page.locator("#notes-version")).to_have_text("Version 0")

    first.get_by_label("Your notes", exact=True).fill("whitelist: steve")
    first.get_by_role("button", name="Save notes").click()
    expect(first.locator("#notes-message")).to_have_text("Saved.")
    expect(first.locator("#notes-version")).to_have_text("Version 1")

    second.get_by_label("Your notes", exact=True).fill("whitelist: alex")
    second.get_by_role("button", name="Save notes").click()
    conflict = second.locator("#notes-conflict")
    expect(conflict).to_be_visible()
    expect(second.locator("#notes-message")).to_contain_text("changed elsewhere")
    expect(second.get_by_label("The saved version")).to_have_value("whitelist: steve")
    expect(second.get_by_label("Your notes", exact=True)).to_have_value("whitelist: alex")  # both versions shown
    screenshot(second, "notes-conflict")
    second.get_by_role("button", name="Keep mine").click()
    expect(second.locator("#notes-message")).to_have_text("Saved.")
    expect(conflict).to_be_hidden()
    with portal_server.client(customer.token) as api:
        assert api.get("/api/notes").json() == {"content": "whitelist: alex", "version": 2}

    # The first tab is now stale too; this time it takes the saved version.
    first.get_by_label("Your notes", exact=True).fill("whitelist: steve, herobrine")
    first.get_by_role("button", name="Save notes").click()
    first.get_by_role("button", name="Use the saved version").click()
    expect(first.get_by_label("Your notes", exact=True)).to_have_value("whitelist: alex")
    first.reload()  # and it persists across a reload
    expect(first.get_by_label("Your notes", exact=True)).to_have_value("whitelist: alex")


def test_support_ticket_and_announcements(page: Page, customer: Customer, admin: httpx.Client) -> None:
    published = admin.post("/api/admin/announcements", json={"level": "warning", "title": "Maintenance tonight",
                                                            "body": "Sunday 02:00-03:00 UTC"})
    assert published.status_code == 201, published.text
    sign_in(page, customer.token)
    expect(page.locator(".announcement", has_text="Maintenance tonight")).to_be_visible()
    page.get_by_role("link", name="Support").click()
    expect(page.locator("#tickets-message")).to_have_text("You have not opened any tickets.")
    page.get_by_label("Subject").fill("Cannot join")
    page.get_by_label("Message").fill("Connection times out")
    page.get_by_role("button", name="Send ticket").click()
    expect(page.locator("#support-message")).to_have_text(re.compile(r"Ticket ZLH-\d{8}-\d{4} opened \(status: open\)"))
    number = re.search(r"ZLH-\d{8}-\d{4}", page.locator("#support-message").inner_text())
    assert number is not None
    expect(page.locator(f'#tickets tr[data-number="{number.group(0)}"]')).to_contain_text("Open")
    admin.delete(f"/api/admin/announcements/{published.json()['id']}")


def webhook(server: Server, customer_id: str, created: int | None = None) -> httpx.Response:
    created = created or int(time.time())
    event = {"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": "invoice.payment_failed",
             "created": created, "livemode": False,
             "data": {"object": {"id": f"in_{uuid.uuid4().hex[:12]}", "object": "invoice", "customer": customer_id,
                                 "status": "open", "attempt_count": 1, "created": created}}}
    payload = json.dumps(event, separators=(",", ":"))
    signature = stripe.WebhookSignature.generate_signature_header(payload, WEBHOOK_SECRET)
    return httpx.post(f"{server.url}/api/billing/stripe/webhook", content=payload.encode(), timeout=30,
                      headers={"Stripe-Signature": signature, "Content-Type": "application/json"})


def test_operator_creates_and_links_a_customer_then_the_billing_banner_follows_a_webhook(
        new_context: Callable[..., BrowserContext], portal_server: Server) -> None:
    operator = new_context().new_page()
    sign_in(operator, ADMIN_TOKEN)
    operator.get_by_role("link", name="Operators").click()
    email = f"billing-{uuid.uuid4().hex[:8]}@example.com"
    operator.get_by_label("Email", exact=True).fill(email)
    operator.get_by_role("button", name="Create user").click()
    expect(operator.locator("#user-message")).to_have_text(f"User {email} created.")
    token = operator.locator("#new-token-value").inner_text()  # shown once, right here
    assert token.startswith("zlh_")
    customer_id = f"cus_{uuid.uuid4().hex[:14]}"
    operator.get_by_label("Stripe customer").fill(customer_id)  # the user id field is filled in already
    operator.get_by_role("button", name="Link customer").click()
    expect(operator.locator("#stripe-message")).to_have_text(f"Stripe customer {customer_id} linked.")
    row = operator.locator(f'#users-table tr[data-email="{email}"]')  # the list comes from GET /api/admin/users
    expect(row).to_contain_text(customer_id)
    expect(row).to_contain_text("Good standing")
    operator.get_by_role("link", name="Servers").click()
    operator.get_by_role("link", name="Operators").click()
    expect(operator.locator("#new-token-value")).to_have_count(0)  # gone once the operator moves on

    received = webhook(portal_server, customer_id)
    assert received.status_code == 200, received.text

    page = new_context().new_page()
    sign_in(page, token)
    banner = page.locator("#billing-banner")
    expect(banner).to_have_attribute("data-state", "warned")
    expect(banner).to_contain_text("Your last payment failed")
    expect(page.locator("#billing-text")).to_contain_text("If the invoice is still unpaid on")
    screenshot(page, "billing-banner")


def test_a_402_answer_shows_the_suspended_banner_not_a_crash(page: Page, admin: httpx.Client,
                                                            portal_server: Server) -> None:
    """The account is suspended after the page loaded: the next create answers 402 and the banner says why."""
    customer = create_customer(admin, "suspended")
    sign_in(page, customer.token)
    expect(page.locator("#billing-banner")).to_be_hidden()  # good standing when the page loaded
    customer_id = f"cus_{uuid.uuid4().hex[:14]}"
    assert admin.put(f"/api/admin/users/{customer.id}/stripe", json={"customer_id": customer_id}).status_code == 200
    # An invoice that failed 8 days ago (Stripe's `created`): every step is entered, in order, at once.
    received = webhook(portal_server, customer_id, created=int(time.time()) - 8 * 86400)
    assert received.status_code == 200, received.text
    with portal_server.client(customer.token) as api:
        deadline = time.monotonic() + 30
        while api.get("/api/billing").json()["state"] != "suspended":
            assert time.monotonic() < deadline, "the account did not reach suspended"
            time.sleep(0.1)
    page.get_by_role("button", name="New server").click()
    page.get_by_label("Name", exact=True).fill("blocked")
    page.locator("#create-submit").click()
    expect(page.locator("#create-error")).to_contain_text("suspended")
    banner = page.locator("#billing-banner")
    expect(banner).to_have_attribute("data-state", "suspended")
    expect(page.locator("#billing-blocked")).to_contain_text("Blocked: creating, starting")
    screenshot(page, "billing-suspended")
    with portal_server.client(customer.token) as api:
        assert api.get("/api/instances").json()["items"] == []  # nothing was created
