"""Subusers in the portal: the owner invites a friend with permissions in the server's Subusers tab, the friend
sees the shared server with only what they may do, the owner changes the permissions and removes them, and the
activity log names who gave access; and renaming the server in its Settings tab."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import create_customer, screenshot, sign_in
from tests.e2e.conftest import ADMIN_TOKEN, Server
from tests.e2e.test_provisioning import poll


def test_invite_share_change_and_remove(page: Page, new_context: Callable[..., BrowserContext],
                                        portal_server: Server) -> None:
    with portal_server.client(ADMIN_TOKEN) as admin:
        owner = create_customer(admin, "owner")
        friend = create_customer(admin, "friend")
    with portal_server.client(owner.token) as api:
        accepted = api.post("/api/instances", headers={"Idempotency-Key": "shared-1"},
                            json={"kind": "game", "name": "shared", "template": "minecraft"})
        assert accepted.status_code == 202, accepted.text
        iid = accepted.json()["instance_id"]
        poll(lambda: api.get(f"/api/instances/{iid}").json(),
             lambda i: i["status"] == "running" and i["pending_operation_id"] is None)

        # The owner invites the friend with the console and power.
        sign_in(page, owner.token)
        page.get_by_role("button", name="Manage shared").click()
        detail = page.locator("#server-detail")
        detail.get_by_role("button", name="Subusers", exact=True).click()
        tab = page.locator("#tab-subusers")
        expect(tab.locator(".subusers-message")).to_contain_text("Nobody else has access")
        form = tab.locator("form.subuser-form")
        form.get_by_role("button", name="Invite").click()
        expect(form.get_by_role("alert")).to_contain_text("Enter the email address")
        form.get_by_label("Their email").fill(friend.email)
        form.get_by_label("Power").check()
        form.get_by_role("button", name="Invite").click()
        expect(tab.locator(".subusers-message")).to_contain_text(f"{friend.email} can now use this server.")
        row = tab.locator("tbody tr").filter(has_text=friend.email)
        expect(row.get_by_label("Console")).to_be_checked()
        expect(row.get_by_label("Power")).to_be_checked()
        expect(row.get_by_label("Read files")).not_to_be_checked()
        members = api.get(f"/api/instances/{iid}/subusers").json()["items"]
        assert [(m["email"], m["permissions"]) for m in members] == [(friend.email, ["console", "power"])]
        # Twice the same person is a clear message, not a second membership.
        form.get_by_label("Their email").fill(friend.email.upper())
        form.get_by_role("button", name="Invite").click()
        expect(form.get_by_role("alert")).to_contain_text("has access to this server already")
        screenshot(page, "subusers-owner")

        # The friend sees the shared server with only what they may do.
        friend_page = new_context(viewport={"width": 1280, "height": 900}).new_page()
        sign_in(friend_page, friend.token)
        card = friend_page.locator("li.card").filter(has_text="shared")
        expect(card).to_contain_text("Shared with you: console, power")
        expect(card.get_by_role("button", name="Restart")).to_be_enabled()
        expect(card.get_by_role("button", name="Delete shared")).to_be_hidden()
        card.get_by_role("button", name="Manage shared").click()
        friend_detail = friend_page.locator("#server-detail")
        expect(friend_detail.get_by_role("button", name="Console", exact=True)).to_be_visible()
        for hidden in ("Files", "Backups", "Schedules", "Activity", "Subusers"):
            expect(friend_detail.get_by_role("button", name=hidden, exact=True)).to_be_hidden()
        screenshot(friend_page, "subusers-friend")

        # The owner swaps power for reading files; the friend's portal follows on its next load.
        row.get_by_label("Power").uncheck()
        row.get_by_label("Read files").check()
        row.get_by_role("button", name=f"Save permissions of {friend.email}").click()
        expect(row.get_by_role("status")).to_have_text("Saved.")
        members = api.get(f"/api/instances/{iid}/subusers").json()["items"]
        assert members[0]["permissions"] == ["console", "files.read"]
        friend_page.reload()
        card = friend_page.locator("li.card").filter(has_text="shared")
        expect(card).to_contain_text("Shared with you: console, files.read")
        expect(card.get_by_role("button", name="Restart")).to_be_disabled()

        # The activity log names who gave access.
        detail.get_by_role("button", name="Activity", exact=True).click()
        activity = page.locator("#tab-activity")
        expect(activity.locator("tr[data-action='subuser.add']")).to_contain_text(owner.email)
        expect(activity.locator("tr[data-action='subuser.update']")).to_contain_text("console, files.read")

        # Removing, after a confirmation: the friend no longer has the server.
        detail.get_by_role("button", name="Subusers", exact=True).click()
        row.get_by_role("button", name=f"Remove {friend.email}").click()
        page.locator("#confirm").get_by_role("button", name="Remove").click()
        expect(tab.locator(".subusers-message")).to_contain_text(f"{friend.email} was removed.")
        expect(tab.locator("tbody tr")).to_have_count(0)

        # Settings: the owner renames the server; the card follows, the address stays.
        detail.get_by_role("button", name="Settings", exact=True).click()
        settings = page.locator("#tab-settings")
        settings.get_by_label("New name").fill("Not A Name")
        settings.get_by_role("button", name="Rename").click()
        expect(settings.locator(".settings-message")).to_contain_text("lower-case letters")
        settings.get_by_label("New name").fill("renamed")
        settings.get_by_role("button", name="Rename").click()
        expect(settings.locator(".settings-message")).to_have_text("Renamed to renamed.")
        expect(page.get_by_role("button", name="Manage renamed")).to_be_visible()
        assert api.get(f"/api/instances/{iid}").json()["name"] == "renamed"
    with portal_server.client(friend.token) as friend_api:
        assert friend_api.get(f"/api/instances/{iid}").status_code == 404
    friend_page.reload()
    expect(friend_page.locator("li.card").filter(has_text="shared")).to_have_count(0)
