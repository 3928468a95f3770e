"""The portal in a real headless Chromium (Debian's `chromium`) against one real `zlh serve`.

One server process and one browser for the whole package keep the run short; every test signs in
its own customer, so tests do not see each other's servers. Screenshots go to var/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.e2e.conftest import ADMIN_TOKEN, ROOT, Server
from tests.real_servers import cache_env, install

CHROMIUM = os.environ.get("ZLH_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WEBHOOK_SECRET = "whsec_portal_browser_tests"
SCREENSHOTS = ROOT / "var" / "screenshots"

expect.set_options(timeout=20_000)


@dataclass
class Customer:
    id: str
    email: str
    token: str


@pytest.fixture(scope="package")
def portal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    install("minecraft")  # the real servers the portal creates, in the cache the whole run shares
    install("python")
    workdir = tmp_path_factory.mktemp("portal")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ZLH_")},
        "PYTHONPATH": str(ROOT),
        "ZLH_DATABASE_URL": f"sqlite:///{workdir}/zlh.sqlite3",
        "ZLH_DATA_DIR": str(workdir / "data"),
        "ZLH_BOOTSTRAP_ADMIN_TOKEN": ADMIN_TOKEN,
        "ZLH_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ZLH_LOCAL_STEP_DELAY": "0.25s",  # makes the pending card's phases visible
        "ZLH_AGENT_STATS_INTERVAL": "1",  # live stats charts fill within a test
        "ZLH_SFTP_LISTEN": "127.0.0.1:0",  # any free port: the API tells the portal which
        **cache_env(),
    }
    server = Server(workdir, env)
    server.start()
    yield server
    server.stop(signal.SIGKILL)
    from services.agent.driver import LocalDriver

    LocalDriver(workdir / "data").kill_all()


@pytest.fixture(scope="package")
def playwright_session() -> Iterator[Playwright]:
    # Package scope, not session: Playwright's sync API keeps an asyncio loop running until it stops,
    # and later tests that call asyncio.run() need it gone.
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright_session: Playwright) -> Iterator[Browser]:
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `apt-get install -y --no-install-recommends "
                    "chromium` (make test does this), or set ZLH_TEST_CHROMIUM to its path", pytrace=False)
    executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    browser = playwright_session.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def new_context(browser: Browser, portal_server: Server) -> Iterator[Callable[..., BrowserContext]]:
    """Opens browser contexts (separate session storage) that fail the test on any page error."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def open_context(**options: object) -> BrowserContext:
        context = browser.new_context(base_url=portal_server.url, **options)
        context.on("page", lambda page: page.on("pageerror", lambda exc: errors.append(str(exc))))
        contexts.append(context)
        return context

    yield open_context
    for context in contexts:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def page(new_context: Callable[..., BrowserContext]) -> Page:
    return new_context(viewport={"width": 1280, "height": 900}).new_page()


@pytest.fixture
def admin(portal_server: Server) -> Iterator[httpx.Client]:
    with portal_server.client(ADMIN_TOKEN) as client:
        yield client


def create_customer(admin: httpx.Client, name: str = "customer") -> Customer:
    email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
    response = admin.post("/api/admin/users", json={"email": email})
    assert response.status_code == 201, response.text
    body = response.json()
    return Customer(body["id"], email, body["token"])


@pytest.fixture
def customer(admin: httpx.Client) -> Customer:
    return create_customer(admin)


def sign_in(page: Page, token: str) -> None:
    page.goto("/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
