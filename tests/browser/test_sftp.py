"""SFTP in the portal: SSH keys on the account page (add, fingerprint, bad key, remove), and a server's SFTP tab
(connection details, a password shown once) that a real SFTP client then signs in with."""

from __future__ import annotations

import re
from collections.abc import Iterator

import asyncssh
import httpx
import paramiko
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Customer, create_customer, screenshot, sign_in
from tests.e2e.conftest import ADMIN_TOKEN, Server
from tests.e2e.test_provisioning import poll


@pytest.fixture(scope="module")
def owner(portal_server: Server) -> Iterator[tuple[Customer, httpx.Client, str]]:
    """A customer with one running game server, made through the API."""
    with portal_server.client(ADMIN_TOKEN) as admin:
        customer = create_customer(admin, "sftp")
    with portal_server.client(customer.token) as api:
        accepted = api.post("/api/instances", headers={"Idempotency-Key": "sftp-1"},
                            json={"kind": "game", "name": "uploads", "template": "minecraft"})
        assert accepted.status_code == 202, accepted.text
        iid = accepted.json()["instance_id"]
        poll(lambda: api.get(f"/api/instances/{iid}").json(),
             lambda i: i["status"] == "running" and i["pending_operation_id"] is None)
        yield customer, api, iid


def test_ssh_keys_on_the_account_page(page: Page, owner: tuple[Customer, httpx.Client, str]) -> None:
    customer, api, _iid = owner
    key = asyncssh.generate_private_key("ssh-ed25519", comment="me@laptop")
    public = key.export_public_key("openssh").decode().strip()
    sign_in(page, customer.token)
    page.get_by_role("link", name="Account").click()
    expect(page.get_by_role("heading", name="SSH keys")).to_be_visible()
    expect(page.locator("#ssh-keys-message")).to_contain_text("No SSH keys yet")
    page.get_by_label("Key name").fill("bad")
    page.get_by_label("Public key").fill("ssh-ed25519 not-a-key")
    page.get_by_role("button", name="Add key").click()
    expect(page.locator("#ssh-keys-message")).to_contain_text("not valid")
    page.get_by_label("Key name").fill("laptop")
    page.get_by_label("Public key").fill(public)
    page.get_by_role("button", name="Add key").click()
    fingerprint = key.get_fingerprint("sha256")
    expect(page.locator("#ssh-keys-message")).to_contain_text(fingerprint)
    row = page.locator("table.ssh-keys tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("laptop")
    expect(row).to_contain_text(fingerprint)
    screenshot(page, "account-ssh-keys")
    assert [k["fingerprint"] for k in api.get("/api/ssh-keys").json()["items"]] == [fingerprint]
    page.get_by_role("button", name="Remove key laptop").click()
    page.get_by_role("button", name="Remove key", exact=True).click()
    expect(page.locator("table.ssh-keys tbody tr")).to_have_count(0)
    assert api.get("/api/ssh-keys").json()["items"] == []


def test_sftp_tab_sets_a_password_a_real_client_signs_in_with(page: Page,
                                                              owner: tuple[Customer, httpx.Client, str]) -> None:
    customer, api, iid = owner
    assert api.put(f"/api/instances/{iid}/files/content", params={"path": "/hello.txt"},
                   content=b"hi").status_code == 204
    sign_in(page, customer.token)
    page.get_by_role("button", name="Manage uploads").click()
    page.locator("#server-detail").get_by_role("button", name="SFTP", exact=True).click()
    details = api.get(f"/api/instances/{iid}/sftp").json()
    expect(page.locator(".sftp-details")).to_contain_text(details["username"])
    expect(page.locator(".sftp-details")).to_contain_text("not set")
    expect(page.locator("#sftp-command")).to_have_text(
        f"sftp -P {details['port']} {details['username']}@{details['host']}")
    page.get_by_role("button", name="Set SFTP password").click()
    password_box = page.get_by_label("Your new SFTP password (shown once)")
    expect(password_box).to_have_value(re.compile(r"^[A-Za-z0-9_-]{20,}$"))
    expect(page.locator(".sftp-details")).to_contain_text("set (set a new one to replace it)")
    screenshot(page, "server-sftp")
    password = password_box.input_value()
    transport = paramiko.Transport((details["host"], details["port"]))
    try:
        transport.connect(username=details["username"], password=password)
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert "hello.txt" in sftp.listdir("/")
        sftp.close()
    finally:
        transport.close()
