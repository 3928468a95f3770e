"""Live stats in the portal: the player count on a game server's card, and charts of CPU, memory and players
on its page, from a real flying-squid server with a real client (mineflayer) online, sampled by the node agent
(the portal's server samples every 1 s here, `ZLH_AGENT_STATS_INTERVAL`, so the charts fill within the test)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Customer, create_customer, screenshot, sign_in
from tests.e2e.conftest import ADMIN_TOKEN, Server
from tests.e2e.test_provisioning import poll
from tests.real_servers import cache_dir, mineflayer


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


@pytest.fixture
def player(owner: tuple[Customer, httpx.Client, str]) -> Iterator[subprocess.Popen[str]]:
    """A real offline-mode Minecraft client (mineflayer) online on the server until the test ends."""
    _, api, iid = owner
    host, port = api.get(f"/api/instances/{iid}").json()["address"].rsplit(":", 1)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MINEFLAYER_HOME": str(mineflayer()),
           "HOME": str(cache_dir())}
    bot = subprocess.Popen(["node", str(Path(__file__).with_name("stay_bot.js")), host, port, "Steve"], env=env,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert bot.stdout is not None
        first = bot.stdout.readline()  # blocks until the bot has spawned in the world, or failed
        assert '"spawn"' in first, f"the player could not join: {first!r}"
        yield bot
    finally:
        assert bot.stdin is not None
        bot.stdin.close()
        try:
            bot.wait(timeout=15)
        except subprocess.TimeoutExpired:
            bot.kill()
            bot.wait()
        if bot.stdout is not None:
            bot.stdout.close()


def test_the_card_shows_players_and_the_page_charts_cpu_memory_and_players(
        page: Page, owner: tuple[Customer, httpx.Client, str], player: subprocess.Popen[str]) -> None:
    customer, api, iid = owner
    stats = poll(lambda: api.get(f"/api/instances/{iid}/stats").json(),
                 lambda s: s["current"] is not None and s["current"]["players_online"] == 1
                 and len(s["history"]) >= 3)
    assert stats["current"]["players_max"] == 20 and stats["current"]["memory_bytes"] > 0
    sign_in(page, customer.token)
    card = page.locator('li.card[data-name="stats"]')
    expect(card.locator(".players")).to_have_text("· 1 / 20 players")
    page.get_by_role("button", name="Manage stats").click()
    strip = page.locator("#server-stats")
    expect(strip.get_by_role("heading", name="Live stats")).to_be_visible()
    for metric in ("cpu_percent", "memory_bytes", "players_online"):
        chart = strip.locator(f'figure.chart[data-metric="{metric}"]')
        expect(chart).to_be_visible()
        expect(chart.locator("polyline")).to_have_attribute("points", re.compile(r"\S+,\S+ \S+,\S+"))
    expect(strip.locator('figure.chart[data-metric="players_online"] .chart-value')).to_have_text("1 / 20")
    expect(strip.locator(".chart-value").nth(1)).to_contain_text("MiB")
    expect(strip.locator(".stats-disk")).to_contain_text("Disk:")
    expect(strip.locator(".stats-disk")).to_contain_text("of 4.0 GiB")
    screenshot(page, "portal-stats")
