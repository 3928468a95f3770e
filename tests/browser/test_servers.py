"""Customer side in a real browser: sign-in, create (pending → running, double click → one server),
console round trip with recovery after a stop, files, backups and restore, responsive layout."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import Customer, screenshot, sign_in
from tests.e2e.conftest import Server


def card(page: Page, name: str) -> Locator:
    return page.locator(f'#server-list li.card[data-name="{name}"]')


def test_sign_in_refuses_a_bad_token_and_signs_out(page: Page, customer: Customer) -> None:
    page.goto("/")
    page.get_by_label("API token").fill("zlh_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_contain_text("That token was not accepted")
    sign_in(page, customer.token)
    expect(page.locator("#who")).to_have_text(customer.email)
    expect(page.locator("#nav-admin")).to_be_hidden()
    assert customer.token not in page.content()
    page.reload()  # the token survives a reload (sessionStorage) …
    expect(page.get_by_role("heading", name="Your servers")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('zlh.token')") is None  # … and is gone after sign-out


def test_create_shows_pending_then_running_and_a_double_click_makes_one_server(
        page: Page, customer: Customer, portal_server: Server) -> None:
    sign_in(page, customer.token)
    expect(page.locator("#servers-message")).to_contain_text("no servers yet")
    page.get_by_role("button", name="New server").click()
    page.get_by_label("Name", exact=True).fill("survival")
    page.get_by_role("button", name="Create", exact=True).dblclick()
    survival = card(page, "survival")
    expect(survival).to_have_attribute("data-pending", "true")
    expect(survival.locator(".op")).to_have_text(re.compile(r"Create: (queued|running)"))
    pending_box = survival.bounding_box()
    expect(survival.locator(".badge")).to_have_text("Running")
    expect(survival).to_have_attribute("data-pending", "false")
    expect(survival.locator(".address-text")).to_have_text(re.compile(r"^127\.0\.0\.1:\d+$"))
    running_box = survival.bounding_box()
    assert pending_box and running_box and pending_box["height"] == running_box["height"]  # no layout shift
    assert pending_box["width"] == running_box["width"]
    screenshot(page, "servers")
    with portal_server.client(customer.token) as api:
        items = api.get("/api/instances").json()["items"]
    assert [i["name"] for i in items] == ["survival"]  # two clicks, one server

    # The same name again: a polite sentence, nothing created.
    page.get_by_role("button", name="New server").click()
    page.get_by_label("Name", exact=True).fill("survival")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.locator("#create-error")).to_contain_text("already have a server with that name")
    page.get_by_role("button", name="Cancel").click()

    # Power buttons are disabled while an operation runs; a stop turns the card to Stopped.
    survival.get_by_role("button", name="Stop", exact=True).click()
    expect(survival.get_by_role("button", name="Start", exact=True)).to_be_disabled()
    expect(survival.locator(".badge")).to_have_text("Stopped")
    expect(survival.get_by_role("button", name="Start", exact=True)).to_be_enabled()

    # Delete asks first; cancelling keeps the server.
    survival.get_by_role("button", name="Delete survival").click()
    expect(page.locator("#confirm")).to_be_visible()
    page.keyboard.press("Escape")
    expect(survival).to_be_visible()
    survival.get_by_role("button", name="Delete survival").click()
    page.locator("#confirm").get_by_role("button", name="Delete server").click()
    expect(survival).to_have_count(0)
