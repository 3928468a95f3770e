"""Notification channels: one attempt each, classified, against real local servers.

SMTP runs against a real `aiosmtpd` server on a free 127.0.0.1 port; Discord against a
`ThreadingHTTPServer` that records requests and answers scripted statuses. "Nothing
listening" is a socket bound but not listening (connection refused, and nobody else can
take the port meanwhile); "hangs" is one listening but never accepting (the client times out).
Also: the pure `backoff` schedule, the Discord payload limits and the scripted fakes.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from services.adapters.discord import (
    DESCRIPTION_MAX,
    EMBED_TOTAL_MAX,
    FIELD_VALUE_MAX,
    FIELDS_MAX,
    TITLE_MAX,
    DiscordAlertChannel,
    build_payload,
)
from services.adapters.fake_notify import FakeAlertChannel, FakeEmailChannel
from services.adapters.smtp import SmtpEmailChannel, message_id
from services.notification_ports import Email, Outcome, StaffAlert, backoff

MAIL = Email(to="alice@example.com", subject="[ZLH-20250101-0042] We received your request: lag",
             body="Hello,\n\nyour ticket number is ZLH-20250101-0042.\n\nÜmlauts stay intact.\n")
ALERT = StaffAlert(title="New support ticket ZLH-20250101-0042", description="lag",
                   fields=(("Number", "ZLH-20250101-0042"), ("Customer", "alice@example.com"), ("Instance", "none")))
KEY = "delivery-7f3c-email"


# --- helpers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound but not listening: connecting is refused, and no other test can take it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that listens but never accepts nor answers: the client's read times out."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


# --- SMTP ----------------------------------------------------------------------------------------


class Inbox:
    """aiosmtpd handler: stores each message; `rcpt_reply` set = RCPT answered with it instead."""

    def __init__(self, rcpt_reply: str | None = None) -> None:
        self.rcpt_reply = rcpt_reply
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"


USER, PASSWORD = "mailer", "s3cret-Pa55word"


def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[Inbox, int]]]:
    """Start `aiosmtpd` controllers on free 127.0.0.1 ports; all are stopped in teardown."""
    controllers: list[Controller] = []

    def start(rcpt_reply: str | None = None, **smtp_kwargs: Any) -> tuple[Inbox, int]:
        inbox = Inbox(rcpt_reply)
        port = free_port()
        controller = Controller(inbox, hostname="127.0.0.1", port=port, **smtp_kwargs)
        controller.start()
        controllers.append(controller)
        return inbox, port

    yield start
    for controller in controllers:
        controller.stop()


def smtp_channel(port: int, userinfo: str = "", **kwargs: Any) -> SmtpEmailChannel:
    return SmtpEmailChannel(f"smtp://{userinfo}127.0.0.1:{port}", local_hostname="client.zlh.localhost",
                            timeout=5.0, **kwargs)


def test_smtp_sent_mail_arrives_as_plain_text(smtp_server: Callable[..., tuple[Inbox, int]]) -> None:
    inbox, port = smtp_server()
    outcome = smtp_channel(port).send(MAIL, KEY)

    assert outcome.status == "sent", outcome
    assert outcome.retry_after is None
    # The server stores the message before it answers DATA: no waiting needed.
    assert len(inbox.messages) == 1
    mail_from, rcpt_tos, msg = inbox.messages[0]
    assert mail_from == "support@zlh.localhost"
    assert rcpt_tos == ["alice@example.com"]
    assert msg["To"] == "alice@example.com"
    assert msg["From"] == "ZLH Support <support@zlh.localhost>"
    assert msg["Subject"] == MAIL.subject
    assert msg["Date"] is not None
    assert msg["Message-ID"] == message_id(KEY)
    assert not msg.is_multipart() and msg.get_content_type() == "text/plain"
    assert msg.get_content().replace("\r\n", "\n") == MAIL.body  # CRLF on the wire


def test_smtp_message_id_is_derived_from_the_dedupe_key(smtp_server: Callable[..., tuple[Inbox, int]]) -> None:
    inbox, port = smtp_server()
    channel = smtp_channel(port)
    assert [channel.send(MAIL, key).status for key in (KEY, KEY, "another-key")] == ["sent"] * 3
    ids = [msg["Message-ID"] for _, _, msg in inbox.messages]
    assert ids[0] == ids[1] != ids[2]
    assert ids[0].startswith("<") and ids[0].endswith("@zlh.localhost>") and KEY not in ids[0]


def test_smtp_nothing_listening_is_transient(refused_port: int) -> None:
    outcome = smtp_channel(refused_port).send(MAIL, KEY)
    assert outcome.status == "transient", outcome
    assert "refused" in outcome.detail


def test_smtp_server_that_never_greets_is_transient(silent_port: int) -> None:
    channel = SmtpEmailChannel(f"smtp://127.0.0.1:{silent_port}", timeout=0.3, local_hostname="client")
    outcome = channel.send(MAIL, KEY)
    assert outcome.status == "transient", outcome
    assert "timed out" in outcome.detail


def test_smtp_recipient_refused_with_550_is_permanent(smtp_server: Callable[..., tuple[Inbox, int]]) -> None:
    inbox, port = smtp_server(rcpt_reply="550 5.1.1 No such user here")
    outcome = smtp_channel(port).send(MAIL, KEY)
    assert outcome.status == "permanent", outcome
    assert "550" in outcome.detail
    assert inbox.messages == []


def test_smtp_recipient_deferred_with_451_is_transient(smtp_server: Callable[..., tuple[Inbox, int]]) -> None:
    inbox, port = smtp_server(rcpt_reply="451 4.3.0 Try again later")
    outcome = smtp_channel(port).send(MAIL, KEY)
    assert outcome.status == "transient", outcome
    assert "451" in outcome.detail
    assert inbox.messages == []


def test_smtp_login_with_credentials_from_the_url(smtp_server: Callable[..., tuple[Inbox, int]]) -> None:
    inbox, port = smtp_server(authenticator=authenticator, auth_require_tls=False)
    assert smtp_channel(port, f"{USER}:{PASSWORD}@").send(MAIL, KEY).status == "sent"
    assert len(inbox.messages) == 1

    wrong = smtp_channel(port, f"{USER}:not-{PASSWORD}@").send(MAIL, KEY)
    assert wrong.status == "permanent", wrong
    assert "535" in wrong.detail
    assert PASSWORD not in wrong.detail
    assert len(inbox.messages) == 1


def test_smtp_login_refused_by_a_server_without_auth_hides_the_password(
        smtp_server: Callable[..., tuple[Inbox, int]]) -> None:
    _, port = smtp_server()
    outcome = smtp_channel(port, f"{USER}:{PASSWORD}@").send(MAIL, KEY)
    assert outcome.status == "permanent", outcome
    assert PASSWORD not in outcome.detail


def test_smtp_unusable_address_is_permanent(smtp_server: Callable[..., tuple[Inbox, int]]) -> None:
    inbox, port = smtp_server()
    outcome = smtp_channel(port).send(Email(to="not an address", subject="s", body="b"), KEY)
    assert outcome.status == "permanent", outcome
    assert inbox.messages == []


def test_smtp_header_injection_is_folded_into_one_line(smtp_server: Callable[..., tuple[Inbox, int]]) -> None:
    inbox, port = smtp_server()
    sneaky = Email(to="alice@example.com", subject="hi\r\nBcc: eve@example.com", body="b")
    assert smtp_channel(port).send(sneaky, KEY).status == "sent"
    _, rcpt_tos, msg = inbox.messages[0]
    assert rcpt_tos == ["alice@example.com"] and msg["Bcc"] is None
    assert msg["Subject"] == "hi Bcc: eve@example.com"


@pytest.mark.parametrize("url", [None, "", "   "])
def test_smtp_not_configured(url: str | None) -> None:
    outcome = SmtpEmailChannel(url).send(MAIL, KEY)
    assert outcome == Outcome("not_configured", "ZLH_SMTP_URL is not set")


@pytest.mark.parametrize("url", ["http://mail.example.com", "mail.example.com:25", "smtp://", "smtp://host:notaport"])
def test_smtp_rejects_unusable_urls_at_construction(url: str) -> None:
    with pytest.raises(ValueError):
        SmtpEmailChannel(url)


def test_smtp_url_parsing() -> None:
    plain = SmtpEmailChannel("smtp://mail.example.com")
    assert (plain.scheme, plain.host, plain.port, plain.username) == ("smtp", "mail.example.com", 25, None)
    tls = SmtpEmailChannel("SMTPS://u%40x:p%3Aw@mail.example.com:2465")
    assert (tls.scheme, tls.host, tls.port, tls.username, tls.password) == (
        "smtps", "mail.example.com", 2465, "u@x", "p:w")
    assert SmtpEmailChannel("smtps://mail.example.com").port == 465
    assert "p:w" not in tls.server


# --- Discord -------------------------------------------------------------------------------------


@dataclass
class Webhook:
    """A stand-in Discord webhook: records requests, answers from `script`, then 204."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    hook = Webhook(url=f"http://127.0.0.1:{server.server_port}/api/webhooks/1234567890/SECRET-token_abcDEF")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                hook.requests.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
                status, headers, reply = hook.script.pop(0) if hook.script else (204, {}, b"")
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *_: object) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def discord(webhook: Webhook) -> Iterator[DiscordAlertChannel]:
    with DiscordAlertChannel(webhook.url, timeout=5.0) as channel:
        yield channel


def discord_error(status: int, message: str, code: int = 0, **extra: Any) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"message": message, "code": code, **extra}).encode()
    return status, {"Content-Type": "application/json"}, body


def assert_no_secret(outcome: Outcome, webhook: Webhook) -> None:
    assert webhook.url not in outcome.detail
    assert "SECRET-token_abcDEF" not in outcome.detail


def test_discord_204_is_sent_with_the_embed(discord: DiscordAlertChannel, webhook: Webhook) -> None:
    outcome = discord.send(ALERT, KEY)
    assert outcome.status == "sent", outcome
    assert_no_secret(outcome, webhook)

    # The server has the request before it answers: no waiting needed.
    assert len(webhook.requests) == 1
    request = webhook.requests[0]
    assert request["path"] == "/api/webhooks/1234567890/SECRET-token_abcDEF?wait=true"
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["json"]
    assert body["username"] == "ZLH"
    assert body["allowed_mentions"] == {"parse": []}
    [embed] = body["embeds"]
    assert embed["title"] == ALERT.title
    assert embed["description"] == "lag"
    assert isinstance(embed["color"], int)
    assert embed["footer"] == {"text": KEY}
    assert embed["fields"] == [
        {"name": "Number", "value": "ZLH-20250101-0042", "inline": True},
        {"name": "Customer", "value": "alice@example.com", "inline": True},
        {"name": "Instance", "value": "none", "inline": True},
    ]


def test_discord_200_with_wait_is_sent(discord: DiscordAlertChannel, webhook: Webhook) -> None:
    webhook.script = [(200, {"Content-Type": "application/json"}, b'{"id": "1122334455", "content": ""}')]
    outcome = discord.send(ALERT, KEY)
    assert outcome.status == "sent" and "1122334455" in outcome.detail


def test_discord_keeps_the_urls_own_query(webhook: Webhook) -> None:
    with DiscordAlertChannel(webhook.url + "?thread_id=99") as channel:
        assert channel.send(ALERT, KEY).status == "sent"
    path = webhook.requests[0]["path"]
    assert "thread_id=99" in path and "wait=true" in path


def test_discord_429_is_transient_with_retry_after_from_the_body(
        discord: DiscordAlertChannel, webhook: Webhook) -> None:
    webhook.script = [discord_error(429, "You are being rate limited.", retry_after=1.5, **{"global": False})]
    outcome = discord.send(ALERT, KEY)
    assert outcome.status == "transient", outcome
    assert outcome.retry_after == 1.5
    assert_no_secret(outcome, webhook)


def test_discord_429_falls_back_to_the_retry_after_header(discord: DiscordAlertChannel, webhook: Webhook) -> None:
    webhook.script = [(429, {"Retry-After": "7"}, b"slow down")]
    outcome = discord.send(ALERT, KEY)
    assert (outcome.status, outcome.retry_after) == ("transient", 7.0)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_discord_5xx_is_transient(discord: DiscordAlertChannel, webhook: Webhook, status: int) -> None:
    webhook.script = [(status, {"Content-Type": "text/html"}, b"<html>" + webhook.url.encode() + b"</html>")]
    outcome = discord.send(ALERT, KEY)
    assert outcome.status == "transient", outcome
    assert outcome.retry_after is None
    assert str(status) in outcome.detail
    assert_no_secret(outcome, webhook)


@pytest.mark.parametrize(("status", "message", "code"), [
    (400, "Invalid Form Body", 50035),
    (401, "Invalid Webhook Token", 50027),
    (403, "Missing Permissions", 50013),
    (404, "Unknown Webhook", 10015),
])
def test_discord_other_4xx_is_permanent(discord: DiscordAlertChannel, webhook: Webhook,
                                        status: int, message: str, code: int) -> None:
    webhook.script = [discord_error(status, message, code)]
    outcome = discord.send(ALERT, KEY)
    assert outcome.status == "permanent", outcome
    assert str(status) in outcome.detail and message in outcome.detail
    assert_no_secret(outcome, webhook)


def test_discord_error_echoing_the_token_is_scrubbed(discord: DiscordAlertChannel, webhook: Webhook) -> None:
    webhook.script = [discord_error(404, f"no webhook at {webhook.url}")]
    outcome = discord.send(ALERT, KEY)
    assert outcome.status == "permanent"
    assert_no_secret(outcome, webhook)


def test_discord_nothing_listening_is_transient(refused_port: int) -> None:
    url = f"http://127.0.0.1:{refused_port}/api/webhooks/1234567890/SECRET-token_abcDEF"
    with DiscordAlertChannel(url, timeout=5.0) as channel:
        outcome = channel.send(ALERT, KEY)
    assert outcome.status == "transient", outcome
    assert url not in outcome.detail and "SECRET-token_abcDEF" not in outcome.detail


def test_discord_timeout_is_transient(silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}/api/webhooks/1234567890/SECRET-token_abcDEF"
    with DiscordAlertChannel(url, timeout=0.3) as channel:
        outcome = channel.send(ALERT, KEY)
    assert outcome.status == "transient", outcome
    assert "timed out" in outcome.detail


@pytest.mark.parametrize("url", [None, "", "  "])
def test_discord_not_configured(url: str | None) -> None:
    outcome = DiscordAlertChannel(url).send(ALERT, KEY)
    assert outcome == Outcome("not_configured", "ZLH_DISCORD_WEBHOOK_URL is not set")


def test_discord_rejects_non_http_urls() -> None:
    with pytest.raises(ValueError):
        DiscordAlertChannel("ftp://discord.com/api/webhooks/1/token")


def test_discord_payload_respects_the_limits() -> None:
    huge = StaffAlert(title="T" * 1000, description="D" * 10_000,
                      fields=tuple((f"f{i}", "V" * 2000) for i in range(40)), level="critical")
    embed = build_payload(huge, KEY)["embeds"][0]
    assert len(embed["title"]) == TITLE_MAX and embed["title"].endswith("…")
    assert len(embed["description"]) <= DESCRIPTION_MAX
    assert len(embed["fields"]) == FIELDS_MAX
    assert all(len(f["value"]) <= FIELD_VALUE_MAX for f in embed["fields"])
    assert "16 more fields" in embed["fields"][-1]["value"]
    total = len(embed["title"]) + len(embed.get("description", "")) + len(embed["footer"]["text"]) + sum(
        len(f["name"]) + len(f["value"]) for f in embed["fields"])
    assert total <= EMBED_TOTAL_MAX or len(embed["description"]) == 1


def test_discord_payload_colours_by_level_and_fills_empty_values() -> None:
    colours = {level: build_payload(StaffAlert("t", "d", level=level), KEY)["embeds"][0]["color"]
               for level in ("info", "warning", "critical")}
    assert len(set(colours.values())) == 3
    embed = build_payload(StaffAlert("t", "", fields=(("Instance", ""),)), KEY)["embeds"][0]
    assert "description" not in embed and embed["fields"][0]["value"] == "-"


# --- backoff -------------------------------------------------------------------------------------


def test_backoff_is_exponential_from_base() -> None:
    assert [backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert [backoff(n, base=0.5) for n in range(1, 4)] == [0.5, 1.0, 2.0]


def test_backoff_is_monotone_and_capped() -> None:
    delays = [backoff(n, base=1.0, cap=60.0) for n in range(0, 200)]
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert max(delays) == 60.0 and delays[-1] == 60.0
    assert backoff(10**6) == 300.0  # no overflow for absurd attempt counts


def test_backoff_honours_retry_after() -> None:
    assert backoff(1, retry_after=1.5) == 1.5
    assert backoff(5, retry_after=1.5) == 16.0  # the schedule is already longer
    assert backoff(20, cap=60.0, retry_after=120.0) == 120.0  # the remote's wish beats the cap
    assert backoff(3, retry_after=None) == backoff(3)


def test_backoff_is_deterministic_and_treats_attempt_zero_as_one() -> None:
    assert backoff(0) == backoff(1) == 1.0
    assert [backoff(7) for _ in range(5)] == [64.0] * 5


def test_outcome_validates_status_and_retry_after() -> None:
    with pytest.raises(ValueError):
        Outcome("lost", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Outcome("transient", "x", retry_after=-1.0)


# --- fakes ---------------------------------------------------------------------------------------


def test_fake_email_channel_answers_its_script_then_sent() -> None:
    channel = FakeEmailChannel(script=[Outcome("transient", "connection refused"), Outcome("transient", "421")])
    outcomes = [channel.send(MAIL, KEY).status for _ in range(4)]
    assert outcomes == ["transient", "transient", "sent", "sent"]
    assert channel.attempts == 4 and len(channel.calls) == 4
    assert channel.sent == [(MAIL, KEY), (MAIL, KEY)]


def test_fake_alert_channel_records_only_what_was_sent() -> None:
    channel = FakeAlertChannel()
    channel.script = [Outcome("permanent", "HTTP 404: Unknown Webhook")]
    assert channel.send(ALERT, "a").status == "permanent"
    assert channel.send(ALERT, "b").status == "sent"
    assert channel.sent == [(ALERT, "b")]
    assert channel.calls == [(ALERT, "a"), (ALERT, "b")]


def test_fake_not_configured() -> None:
    channel = FakeEmailChannel(configured=False)
    assert channel.send(MAIL, KEY).status == "not_configured"
    assert channel.sent == [] and channel.attempts == 1
