"""A real `zlh serve` under hostile input: bodies refused unread, browser headers, tickets out of the log."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from api.security import SECURITY_HEADERS
from tests.e2e.conftest import Server
from tests.e2e.test_provisioning import new_customer

MiB = 1024 * 1024


class Counted:
    """A request body of `total` bytes, made one chunk at a time as the client sends it; counts what was pulled."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.pulled = total, chunk, 0

    def __iter__(self) -> Iterator[bytes]:
        while self.pulled < self.total:
            size = min(self.chunk, self.total - self.pulled)
            self.pulled += size
            yield b" " * size


def send_big(server: Server, path: str, total: int, headers: dict[str, str]) -> tuple[httpx.Response, Counted]:
    body = Counted(total)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post(path, content=body, headers={"Content-Type": "application/json", **headers})
    return response, body


@pytest.mark.e2e
def test_a_48_mib_body_without_a_token_is_refused_unread(serve: Callable[..., Server]) -> None:
    server = serve()
    response, body = send_big(server, "/api/support/create", 48 * MiB, {"Content-Length": str(48 * MiB)})
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "too_large"
    assert response.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    # The client stops sending once the server has answered and closed: what left it is what the socket
    # buffers took (a few MiB at most on loopback), far from 48 MiB.
    assert body.pulled < 16 * MiB, body.pulled
    # A chunked body (no Content-Length) is read only up to the limit.
    response, body = send_big(server, "/api/support/create", 48 * MiB, {})
    assert response.status_code == 413 and response.json()["code"] == "too_large", response.text
    assert body.pulled < 16 * MiB, body.pulled
    # The service goes on as before.
    with new_customer(server, "alice@example.com") as alice:
        created = alice.post("/api/support/create", json={"subject": "still here", "message": "after the flood"})
    assert created.status_code == 201, created.text
    assert created.headers["ZLH-Read-Your-Writes"] == "caught-up"


@pytest.mark.e2e
def test_browser_headers_everywhere_and_console_tickets_not_logged(serve: Callable[..., Server]) -> None:
    server = serve()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for path in ("/", "/css/portal.css", "/docs", "/docs/assets/swagger-ui.css", "/openapi.json", "/api/me",
                     "/healthz", "/no-such-page"):
            r = client.get(path)
            for name, value in SECURITY_HEADERS.items():
                assert r.headers.get(name) == value, (path, name)
        docs = client.get("/docs").text
        assert "cdn" not in docs.lower() and "//" not in docs.replace("<!doctype", "")
    secret = "tkt-not-for-logs-0123456789"
    url = server.url.replace("http://", "ws://") + \
        f"/api/instances/00000000-0000-0000-0000-000000000000/console/ws?ticket={secret}"
    with connect(url, open_timeout=15) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.get("/healthz", params={"ticket": secret})
        client.get("/healthz", params={"x": "1"})  # a later line: the earlier ones are flushed by now
    log = (server.workdir / "serve.log").read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [entry["message"] for entry in lines if "ticket=" in entry.get("message", "")]
    assert secret not in log
    assert access and all("ticket=[redacted]" in message for message in access), access


@pytest.mark.e2e
def test_the_issues_bad_inputs_leave_a_real_serve_caught_up(serve: Callable[..., Server]) -> None:
    """The issue's own reproduction, over HTTP against `zlh serve` (SQLite and PostgreSQL): the inputs that
    once wedged a read model are refused, every follower stays at the log's head, and later writes are
    answered with their read models caught up (the header, not a timing)."""
    server = serve()
    with server.client() as admin, new_customer(server, "alice@example.com") as alice:
        refused = [
            alice.post("/api/support/create", json={"subject": "a\u0000b", "message": "m"}),
            admin.post("/api/admin/announcements", json={"level": "info", "title": "t", "body": "b",
                                                         "ends_at": "9999-12-31T23:59:59-14:00"}),
            alice.put("/api/notes", content=b'{"content": "\\ud800"}',
                      headers={"If-Match": "0", "Content-Type": "application/json"}),
            alice.put("/api/notes", json={"content": "x"}, headers={"If-Match": "9" * 5000}),
            alice.put("/api/notes", content=b'{"content": "x"}',
                      headers={"If-Match": "\u00b2".encode("latin-1"), "Content-Type": "application/json"}),
            alice.get("/api/instances/00000000-0000-0000-0000-000000000000/files", params={"path": "/" + "n" * 256}),
        ]
        assert [r.status_code for r in refused] == [422, 422, 422, 400, 400, 404], [r.text for r in refused]
        assert all(r.headers["content-type"] == "application/problem+json" for r in refused)

        deadline = time.monotonic() + 30
        while True:
            items = admin.get("/api/admin/projections").json()["items"]
            if all(p["position"] == p["head"] for p in items) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert all(p["position"] == p["head"] and not p["dead_letters"] for p in items), items

        writes = [alice.post("/api/support/create", json={"subject": "after", "message": "the storm"}),
                  admin.post("/api/admin/announcements", json={"level": "info", "title": "after", "body": "b"})]
        for response in writes:
            assert response.status_code == 201, response.text
            assert response.headers["ZLH-Read-Your-Writes"] == "caught-up"
        assert alice.get("/api/support/tickets").json()["items"][0]["subject"] == "after"
