"""The portal is served by `zlh serve` itself, after every API route (which keep precedence)."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import Server


def test_portal_is_served_at_root_and_the_api_keeps_precedence(portal_server: Server) -> None:
    with httpx.Client(base_url=portal_server.url, timeout=30) as client:
        index = client.get("/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/js/main.js">' in index.text
        script = client.get("/js/api.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert client.get("/css/portal.css").status_code == 200
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/openapi.json").json()["info"]["title"] == "ZLH control plane"
        assert client.get("/docs").status_code == 200
        assert client.get("/metrics").text.startswith("#")
        missing = client.get("/api/no-such-route")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        assert client.get("/no-such-file.js").json()["code"] == "not_found"
        assert client.get("/api/me").status_code == 401  # the API answers, not a static file
