"""Live stats in the portal: the player count on a game server's card, and charts of CPU, memory and players on
its page, from a real flying-squid server sampled by the node agent (the portal's server samples every 0.5 s here,
`ZLH_AGENT_STATS_INTERVAL`, so the charts fill within the test)."""

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
        customer = create_customer(admin, "stats")
    with portal_server.client(customer.token) as api:
        accepted = api.post("/api/instances", headers={"Idempotency-Key": "stats-1"},
                            json={"kind": "game", "name": "stats", "template": "minecraft"})
        assert accepted.status_code == 202, accepted.text
        iid = accepted.json()["instance_id"]
        poll(lambda: api.get(f"/api/instances/{iid}").json(),
             lambda i: i["status"] == "running" and i["pending_operation_id"] is None)
        yield customer, api, iid


def test_the_card_shows_players_and_the_page_charts_cpu_memory_and_players(
        page: Page, owner: tuple[Customer, httpx.Client, str]) -> None:
    customer, api, iid = owner
    stats = poll(lambda: api.get(f"/api/instances/{iid}/stats").json(),
                 lambda s: s["current"] is not None and s["current"]["players_max"] is not None
                 and len(s["history"]) >= 3)
    assert stats["current"]["players_max"] == 20 and stats["current"]["memory_bytes"] > 0
    sign_in(page, customer.token)
    card = page.locator('li.card[data-name="stats"]')
    expect(card.locator(".players")).to_have_text("· 0 / 20 players")
    page.get_by_role("button", name="Manage stats").click()
    strip = page.locator("#server-stats")
    expect(strip.get_by_role("heading", name="Live stats")).to_be_visible()
    for metric in ("cpu_percent", "memory_bytes", "players_online"):
        chart = strip.locator(f'figure.chart[data-metric="{metric}"]')
        expect(chart).to_be_visible()
        expect(chart.locator("polyline")).to_have_attribute("points", re.compile(r"\S+,\S+ \S+,\S+"))
    expect(strip.locator('figure.chart[data-metric="players_online"] .chart-value')).to_have_text("0 / 20")
    expect(strip.locator(".chart-value").nth(1)).to_contain_text("MiB")
    expect(strip.locator(".stats-disk")).to_contain_text("Disk:")
    expect(strip.locator(".stats-disk")).to_contain_text("of 4.0 GiB")
    screenshot(page, "portal-stats")
