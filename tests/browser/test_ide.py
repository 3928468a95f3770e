"""The `python` dev container's IDE in a real browser: JupyterLab opens at the address the API gives.

The instance is made through the API; the browser then opens its address (the owner's URL, with the
instance's token) and gets the JupyterLab workbench, with the instance's own files in its file browser.
"""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from tests.browser.conftest import Customer, screenshot
from tests.e2e.conftest import Server
from tests.e2e.test_provisioning import poll


def test_the_python_ide_opens_in_the_browser(browser: Browser, portal_server: Server, customer: Customer) -> None:
    with portal_server.client(customer.token) as api:
        accepted = api.post("/api/instances", headers={"Idempotency-Key": "ide-1"},
                            json={"kind": "dev", "name": "notebook", "template": "python"})
        assert accepted.status_code == 202, accepted.text
        iid = accepted.json()["instance_id"]
        address = poll(lambda: api.get(f"/api/instances/{iid}").json(),
                       lambda i: i["status"] == "running" and i["pending_operation_id"] is None)["address"]
        assert api.put(f"/api/instances/{iid}/files/content", params={"path": "/hello.py"},
                       content=b"print('hello from ZLH')\n").status_code == 204
    context = browser.new_context(viewport={"width": 1280, "height": 800})  # JupyterLab's origin, not the portal's
    try:
        page = context.new_page()
        page.goto(address)
        expect(page).to_have_title("JupyterLab", timeout=60_000)
        expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=60_000)
        launcher = page.locator(".jp-Launcher")
        expect(launcher.get_by_text("Python 3 (ipykernel)").first).to_be_visible(timeout=60_000)
        expect(page.locator(".jp-DirListing-content").get_by_text("hello.py")).to_be_visible(timeout=30_000)
        screenshot(page, "jupyterlab")
    finally:
        context.close()
    with portal_server.client(customer.token) as api:
        deleted = api.delete(f"/api/instances/{iid}")
        assert deleted.status_code == 202
        poll(lambda: api.get(f"/api/instances/{iid}").json(), lambda i: i["status"] == "deleted")
