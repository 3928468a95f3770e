"""End to end: a ticket opened over HTTP reaches a real SMTP server and a stand-in Discord webhook.

Also: SMTP down when the ticket is opened, then up: exactly one mail arrives (retried with backoff).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from uuid import UUID

import pytest
from aiosmtpd.controller import Controller

from domain.delivery import delivery_id
from tests.e2e.conftest import Server, free_port
from tests.e2e.test_provisioning import new_customer, poll


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def start_smtp(port: int) -> tuple[Inbox, Controller]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return inbox, controller


@pytest.fixture
def discord() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/api/webhooks/1/token", received
    server.shutdown()
    server.server_close()


def test_ticket_email_and_staff_alert(serve: Callable[..., Server], discord: tuple[str, list[dict]]) -> None:
    smtp_port = free_port()
    inbox, controller = start_smtp(smtp_port)
    try:
        server = serve(ZLH_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}", ZLH_DISCORD_WEBHOOK_URL=discord[0])
        with new_customer(server, "dana@example.com") as dana:
            r = dana.post("/api/support/create", json={"subject": "Cannot join", "message": "Timeout on join"})
            assert r.status_code == 201, r.text
            number = r.json()["number"]
            poll(lambda: (len(inbox.messages), len(discord[1])), lambda n: n == (1, 1), timeout=30)
    finally:
        controller.stop()
    _, rcpt, content = inbox.messages[0]
    assert rcpt == ["dana@example.com"]
    text = content.decode()
    assert f"Subject: [{number}]" in text and "Timeout on join" in text and "text/plain" in text
    embed = discord[1][0]["embeds"][0]
    assert number in embed["title"]
    assert {"name": "Customer", "value": "dana@example.com", "inline": True} in embed["fields"]


def test_smtp_down_then_up_delivers_exactly_one_mail(serve: Callable[..., Server]) -> None:
    smtp_port = free_port()  # nothing listens here yet
    server = serve(ZLH_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}")
    with new_customer(server, "erin@example.com") as erin, server.client() as admin:
        ticket = erin.post("/api/support/create", json={"subject": "s", "message": "m"}).json()
        stream = f"/api/admin/streams/{delivery_id(UUID(ticket['id']), 1, 'email')}/events"
        poll(lambda: [e["type"] for e in admin.get(stream).json().get("events", [])],
             lambda types: "zlh.Delivery.RetryScheduled" in types, timeout=30)
        inbox, controller = start_smtp(smtp_port)
        try:
            poll(lambda: [e["type"] for e in admin.get(stream).json()["events"]],
                 lambda types: "zlh.Delivery.Sent" in types, timeout=60)
        finally:
            controller.stop()
    assert len(inbox.messages) == 1
