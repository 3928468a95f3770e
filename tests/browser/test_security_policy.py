"""The Content-Security-Policy holds in a real browser: the portal and `/docs` work under it, break none
of its rules, and load nothing from another origin."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import Customer, screenshot, sign_in
from tests.e2e.conftest import Server


def watch(page: Page, origin: str) -> tuple[list[str], list[str]]:
    """Policy violations the page reports, and every request it makes to another origin."""
    violations: list[str] = []
    foreign: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text)
            if "Content Security Policy" in msg.text or "Refused to" in msg.text else None)
    page.on("request", lambda request: foreign.append(request.url)
            if not request.url.startswith((origin, "data:", "ws://127.0.0.1")) else None)
    page.add_init_script("document.addEventListener('securitypolicyviolation', e => "
                         "console.error('Refused to load (CSP): ' + e.violatedDirective + ' ' + e.blockedURI))")
    return violations, foreign


def test_the_portal_works_under_the_policy(page: Page, customer: Customer, portal_server: Server) -> None:
    violations, foreign = watch(page, portal_server.url)
    sign_in(page, customer.token)
    for view in ("Support", "Notes", "Servers"):
        page.get_by_role("navigation").get_by_role("link", name=view).click()
    expect(page.get_by_role("heading", name="Your servers")).to_be_visible()
    response = page.request.get("/")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert violations == [] and foreign == []


def test_docs_render_from_this_origin_only(new_context: Callable[..., BrowserContext], portal_server: Server) -> None:
    page = new_context(viewport={"width": 1280, "height": 900}).new_page()
    violations, foreign = watch(page, portal_server.url)
    page.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("ZLH control plane")
    expect(page.locator(".opblock").first).to_be_visible()
    page.locator(".opblock-summary", has_text="/api/me").first.click()
    expect(page.get_by_role("button", name="Try it out").first).to_be_visible()
    screenshot(page, "docs")
    assert violations == [] and foreign == [], (violations, foreign)


def test_the_portal_cannot_be_framed(new_context: Callable[..., BrowserContext], portal_server: Server) -> None:
    page = new_context().new_page()
    with page.expect_console_message(lambda m: "frame-ancestors 'none'" in m.text, timeout=20_000):
        page.set_content(f'<iframe id="f" src="{portal_server.url}/"></iframe>')
    frame = next(f for f in page.frames if f != page.main_frame)
    assert "Sign in" not in frame.content()
