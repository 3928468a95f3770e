"""One running game server, driven from its detail panel: console (round trip, recovery after a
stop, reconnect after a start), files (edit, upload, download, bad path), backups, restore and deletion."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import Customer, create_customer, screenshot, sign_in
from tests.e2e.conftest import ADMIN_TOKEN, Server
from tests.e2e.test_provisioning import poll


@pytest.fixture(scope="module")
def owner(portal_server: Server) -> Iterator[tuple[Customer, httpx.Client, str]]:
    """A customer with one running game server, made through the API."""
    with portal_server.client(ADMIN_TOKEN) as admin:
        customer = create_customer(admin, "tools")
    with portal_server.client(customer.token) as api:
        accepted = api.post("/api/instances", headers={"Idempotency-Key": "tools-1"},
                            json={"kind": "game", "name": "tools", "template": "minecraft"})
        assert accepted.status_code == 202, accepted.text
        iid = accepted.json()["instance_id"]
        poll(lambda: api.get(f"/api/instances/{iid}").json(),
             lambda i: i["status"] == "running" and i["pending_operation_id"] is None)
        yield customer, api, iid


def open_tools(page: Page, customer: Customer, tab: str) -> None:
    sign_in(page, customer.token)
    page.get_by_role("button", name="Manage tools").click()
    expect(page.locator("#detail-title")).to_contain_text("tools")
    page.locator("#server-detail").get_by_role("button", name=tab, exact=True).click()


def test_console_round_trip_recovers_after_a_stop_and_reconnects(
        page: Page, owner: tuple[Customer, httpx.Client, str]) -> None:
    customer, _, _ = owner
    open_tools(page, customer, "Console")
    toggle = page.locator(".console-toggle")
    expect(toggle).to_have_text("Open console")
    toggle.click()
    expect(page.locator(".console-status")).to_have_text("Connected.")
    expect(toggle).to_have_text("Close console")
    page.get_by_label("Command").fill("say hello")
    page.get_by_label("Command").press("Enter")
    expect(page.locator(".console-out .line", has_text="hello").first).to_be_visible()
    screenshot(page, "console")

    # Stop the server from its card: the console must come back to "Reconnect" by itself.
    page.locator('li.card[data-name="tools"]').get_by_role("button", name="Stop", exact=True).click()
    expect(toggle).to_have_text("Reconnect", timeout=15_000)
    expect(page.locator(".console-status")).to_have_text(re.compile(r"stopped|not running|lost|failed"))
    expect(page.get_by_label("Command")).to_be_disabled()
    assert page.evaluate("document.querySelector('.console-toggle').textContent") == "Reconnect"

    # Reconnecting to a stopped server says so, and still ends at "Reconnect".
    toggle.click()
    expect(page.locator(".console-status")).to_contain_text("running server")
    expect(toggle).to_have_text("Reconnect")

    # Start it again and reconnect: the console works again.
    card = page.locator('li.card[data-name="tools"]')
    card.get_by_role("button", name="Start", exact=True).click()
    expect(card.locator(".badge")).to_have_text("Running")
    expect(card).to_have_attribute("data-pending", "false")
    toggle.click()
    expect(page.locator(".console-status")).to_have_text("Connected.")
    page.get_by_label("Command").fill("say again")
    page.get_by_label("Command").press("Enter")
    expect(page.locator(".console-out .line", has_text="again").first).to_be_visible()
    toggle.click()
    expect(toggle).to_have_text("Reconnect")


def test_files_edit_upload_download_and_bad_path(page: Page, owner: tuple[Customer, httpx.Client, str]) -> None:
    customer, api, iid = owner
    open_tools(page, customer, "Files")
    files = page.locator("#tab-files")
    files.get_by_role("button", name="settings.json", exact=True).click()  # flying-squid's own settings
    editor = page.locator("#files-editor")
    expect(editor).to_have_value(re.compile(r'"motd": "A ZLH server"'))
    editor.fill('{"motd": "edited in the portal"}\n')
    files.get_by_role("button", name="Save file").click()
    expect(files.locator(".files-message")).to_have_text("Saved /settings.json.")
    content = api.get(f"/api/instances/{iid}/files/content", params={"path": "/settings.json"})
    assert content.content == b'{"motd": "edited in the portal"}\n'
    screenshot(page, "files")

    files.locator("#files-upload").set_input_files(
        files=[{"name": "whitelist.txt", "mimeType": "text/plain", "buffer": b"steve\n"}])
    expect(files.locator(".files-message")).to_have_text("Uploaded /whitelist.txt.")
    expect(files.locator('tr[data-name="whitelist.txt"]')).to_be_visible()
    with page.expect_download() as download:
        files.get_by_role("button", name="Download whitelist.txt").click()
    assert Path(download.value.path()).read_bytes() == b"steve\n"

    files.get_by_label("Folder").fill("/../../etc")
    files.get_by_role("button", name="Open", exact=True).click()
    expect(files.locator(".files-message")).to_contain_text("outside your server\N{RIGHT SINGLE QUOTATION MARK}s files")


def test_backup_and_restore(page: Page, owner: tuple[Customer, httpx.Client, str]) -> None:
    customer, api, iid = owner
    put = api.put(f"/api/instances/{iid}/files/content", params={"path": "/world.txt"}, content=b"before\n")
    assert put.status_code == 204, put.text
    open_tools(page, customer, "Backups")
    backups = page.locator("#tab-backups")
    expect(backups.locator(".backups-message")).to_have_text("No backups yet.")
    backups.get_by_role("button", name="Create backup").click()
    expect(backups.locator(".backups-message")).to_have_text("Backup made.")
    expect(backups.locator('tbody tr[data-status="completed"]')).to_have_count(1)

    put = api.put(f"/api/instances/{iid}/files/content", params={"path": "/world.txt"}, content=b"after\n")
    assert put.status_code == 204, put.text
    backups.get_by_role("button", name=re.compile("^Restore the backup")).click()
    page.locator("#confirm").get_by_role("button", name="Restore backup").click()
    expect(backups.locator(".backups-message")).to_have_text("Backup restored.")
    restored = api.get(f"/api/instances/{iid}/files/content", params={"path": "/world.txt"})
    assert restored.content == b"before\n"

    # The customer deletes it (an operation: the node agent removes the archive); the list empties.
    backups.get_by_role("button", name=re.compile("^Delete the backup")).click()
    page.locator("#confirm").get_by_role("button", name="Delete backup").click()
    expect(backups.locator(".backups-message")).to_have_text("No backups yet.")  # once the list is reloaded
    expect(backups.locator('tbody tr[data-status="completed"]')).to_have_count(0)
    poll(lambda: api.get("/api/backups").json()["items"], lambda items: items == [])  # the read model follows


def test_phone_width_dark_scheme_and_keyboard_only(new_context: Callable[..., BrowserContext],
                                                   owner: tuple[Customer, httpx.Client, str]) -> None:
    customer, _, _ = owner
    page = new_context(viewport={"width": 360, "height": 740}, color_scheme="dark").new_page()
    page.goto("/")
    expect(page.get_by_label("API token")).to_be_focused()  # the page starts in the token field
    page.keyboard.press("Shift+Tab")  # the skip link comes before it
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Tab")
    page.keyboard.type(customer.token)
    page.keyboard.press("Enter")
    card = page.locator('li.card[data-name="tools"]')
    expect(card.locator(".badge")).to_have_text("Running")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(15, 19, 24)"  # dark scheme
    page.get_by_role("button", name="Manage tools").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#server-detail")).to_be_visible()
    page.locator(".console-toggle").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".console-status")).to_have_text("Connected.")
    page.keyboard.type("say from the phone")
    page.keyboard.press("Enter")
    expect(page.locator(".console-out .line", has_text="from the phone").first).to_be_visible()
    # Nothing is wider than the phone: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    box = card.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360
    screenshot(page, "phone-dark")
    page.locator(".console-toggle").click()
    expect(page.locator(".console-toggle")).to_have_text("Reconnect")


def test_backups_say_where_they_are_and_how_many_automatic_ones_are_kept(
        page: Page, owner: tuple[Customer, httpx.Client, str]) -> None:
    customer, api, iid = owner
    open_tools(page, customer, "Backups")
    backups = page.locator("#tab-backups")
    expect(backups.locator(".retention .hint")).to_have_text(
        "Automatic backups are kept until the backups limit is reached.")
    backups.get_by_label("Automatic backups kept").fill("0")
    backups.get_by_role("button", name="Save").click()  # the browser refuses it (1 to 1000), as the API would
    assert page.evaluate("document.getElementById('backup-keep').validity.rangeUnderflow")
    assert api.get(f"/api/instances/{iid}/backups/retention").json()["keep"] is None
    backups.get_by_label("Automatic backups kept").fill("3")
    backups.get_by_role("button", name="Save").click()
    expect(backups.locator(".backups-message")).to_have_text("Retention saved.")
    expect(backups.locator(".retention .hint")).to_contain_text("The newest 3 automatic backups are kept;")
    assert api.get(f"/api/instances/{iid}/backups/retention").json()["keep"] == 3
    backups.get_by_role("button", name="Create backup").click()
    expect(backups.locator(".backups-message")).to_have_text("Backup made.")
    expect(backups.locator('tbody tr[data-status="completed"] td').nth(3)).to_have_text(
        "On the server\N{RIGHT SINGLE QUOTATION MARK}s machine")
    screenshot(page, "backups-retention")
    backups.get_by_label("Automatic backups kept").fill("")
    backups.get_by_role("button", name="Save").click()
    expect(backups.locator(".retention .hint")).to_have_text(
        "Automatic backups are kept until the backups limit is reached.")
