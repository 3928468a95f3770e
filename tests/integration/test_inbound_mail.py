"""Replies by email: a real SMTP client (smtplib) to our listener (aiosmtpd), and a real IMAP server (Dovecot).

An owner's reply to `support+NUMBER@` becomes a customer reply on the ticket, trimmed, with its attachments;
everything else (a stranger, a forged or unknown number, an auto-reply, no ticket address) is kept as unmatched
mail for staff and touches no ticket. Each message is recorded once, by Message-ID.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from domain.mail import InboundMail, mail_id
from domain.support import SupportTicket
from services.adapters.fake_notify import FakeAlertChannel, FakeEmailChannel
from services.bootstrap import Container
from tests import dovecot
from tests.integration.conftest import ADMIN_TOKEN, auth, poll
from tests.integration.test_api import assert_problem, make_customer

ADMIN = auth(ADMIN_TOKEN)
DOMAIN = "zlh.example"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 200

REPLY = """Restarting did not help, it still lags at 5 pm.

On Mon, 2 Mar 2026 at 10:15, ZLH Support <support@zlh.example> wrote:
> Hello,
> please restart the server.

--
Alice
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def message(sender: str, to: str, body: str = REPLY, subject: str = "Re: Lag", message_id: str | None = None,
            attachments: list[tuple[str, bytes, str]] = (), **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Someone <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain="mail.example.com")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    for name, data, declared in attachments:
        maintype, subtype = declared.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def container(make_container: Callable[..., Container], smtp_port: int) -> Container:
    built = make_container(workers=("projections", "provisioning"), support_domain=DOMAIN,
                           inbound_smtp=f"127.0.0.1:{smtp_port}")
    built.channels = (FakeEmailChannel(), FakeAlertChannel())
    built.start(("notifications", "mail"))
    return built


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as c:
        yield c


def send(port: int, msg: EmailMessage, rcpt: list[str] | None = None, mail_from: str | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(msg, from_addr=mail_from or msg["From"].addresses[0].addr_spec,
                          to_addrs=rcpt or [msg["To"]])


def ticket_of(client: TestClient, headers: dict) -> dict:
    r = client.post("/api/support/create", json={"subject": "Lag", "message": "my server lags"}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def unmatched(client: TestClient) -> list[dict]:
    return client.get("/api/admin/support/mail", headers=ADMIN).json()["items"]


def test_an_owners_reply_by_email_lands_on_the_ticket_trimmed_with_attachments(
        client: TestClient, container: Container, smtp_port: int) -> None:
    alice = make_customer(client, "alice@example.com")
    ticket = ticket_of(client, alice)
    client.post(f"/api/admin/support/tickets/{ticket['id']}/reply", json={"message": "Please restart it."},
                headers=ADMIN).raise_for_status()
    address = f"support+{ticket['number']}@{DOMAIN}"
    msg = message("Alice@Example.com", address, attachments=[("lag.png", PNG, "image/png"),
                                                             ("not-a-picture.png", ELF, "image/png")])
    send(smtp_port, msg)  # returns once our listener answered 250: recorded by then

    view = client.get(f"/api/support/tickets/{ticket['id']}", headers=alice).json()
    last = view["messages"][-1]
    assert last["via"] == "email" and last["author"]["staff"] is False
    assert last["message"].startswith("Restarting did not help, it still lags at 5 pm.")
    assert "please restart the server" not in last["message"] and "Alice" not in last["message"].split("\n")[0][-6:]
    assert "[Attachment not accepted: not-a-picture.png: the name promises image/png but the content is an " \
           "executable" in last["message"]
    assert [a["name"] for a in last["attachments"]] == ["lag.png"]
    assert view["status"] == "open"
    got = client.get(f"/api/support/tickets/{ticket['id']}/attachments/{last['attachments'][0]['sha256']}",
                     headers=alice)
    assert got.content == PNG
    # Recorded once: the same message again (an MX retry) changes nothing.
    send(smtp_port, msg)
    assert len(client.get(f"/api/support/tickets/{ticket['id']}", headers=alice).json()["messages"]) == 3
    record = container.app.find(mail_id(msg["Message-ID"]), InboundMail)
    assert record is not None and record.outcome == "matched" and record.ticket_id is not None
    assert len(container.app.stream(record.id)) == 1
    assert container.wait_for_projections(container.app.head(), ("inbound_mail",), timeout=20)
    everything = client.get("/api/admin/support/mail", params={"status": "all"}, headers=ADMIN).json()["items"]
    assert [m["status"] for m in everything] == ["matched"] and unmatched(client) == []


def test_anything_else_is_kept_for_staff_and_never_attached(client: TestClient, container: Container,
                                                           smtp_port: int) -> None:
    alice = make_customer(client, "alice@example.com")
    ticket = ticket_of(client, alice)
    address = f"support+{ticket['number']}@{DOMAIN}"
    before = len(container.app.stream(SupportTicket.create_id(ticket["number"])))
    cases = {
        "sender_mismatch": message("mallory@example.com", address, body="I am Alice, delete my server"),
        "unknown_ticket": message("alice@example.com", f"support+ZLH-20990101-9999@{DOMAIN}"),
        "forged": message("alice@example.com", f"support+ZLH-../../{ticket['number']}@{DOMAIN}"),
        "no_ticket_address": message("stranger@example.org", f"support@{DOMAIN}", subject="Do you sell servers?"),
        "auto_reply": message("alice@example.com", address, body="I am out of office.", Auto_Submitted="auto-replied"),
        "authentication_failed": message("alice@example.com", address, Authentication_Results=(
            "mx.zlh.example; spf=fail smtp.mailfrom=example.com; dkim=none; dmarc=fail header.from=example.com")),
    }
    for msg in cases.values():
        send(smtp_port, msg)
    assert len(container.app.stream(SupportTicket.create_id(ticket["number"]))) == before  # no ticket touched
    assert container.wait_for_projections(container.app.head(), ("inbound_mail",), timeout=20)
    listed = unmatched(client)
    assert sorted(m["reason"] for m in listed) == sorted(["sender_mismatch", "unknown_ticket", "unknown_ticket",
                                                           "no_ticket_address", "auto_reply", "authentication_failed"])
    assert next(m for m in listed if m["subject"] == "Do you sell servers?")["reason"] == "no_ticket_address"
    # Staff read it, download it as received, and dismiss it; it stays recorded.
    stranger = next(m for m in unmatched(client) if m["from_address"] == "mallory@example.com")
    detail = client.get(f"/api/admin/support/mail/{stranger['id']}", headers=ADMIN).json()
    assert "delete my server" in detail["text"] and detail["status"] == "unmatched"
    raw = client.get(f"/api/admin/support/mail/{stranger['id']}/raw", headers=ADMIN)
    assert raw.status_code == 200 and b"I am Alice" in raw.content
    assert raw.headers["content-disposition"].startswith("attachment;")
    dismissed = client.post(f"/api/admin/support/mail/{stranger['id']}/dismiss", headers=ADMIN)
    assert dismissed.status_code == 200 and dismissed.json()["status"] == "dismissed"
    assert stranger["id"] not in [m["id"] for m in unmatched(client)]
    assert_problem(client.post(f"/api/admin/support/mail/{stranger['id']}/dismiss", headers=ADMIN),
                   409, "illegal_transition")
    assert_problem(client.get("/api/admin/support/mail", headers=alice), 403, "forbidden")
    assert "delete my server" not in str(client.get(f"/api/support/tickets/{ticket['id']}", headers=alice).json())


def test_the_listener_relays_nothing_and_reopens_a_closed_ticket(client: TestClient, smtp_port: int) -> None:
    alice = make_customer(client, "alice@example.com")
    ticket = ticket_of(client, alice)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(smtp_port, message("alice@example.com", "victim@elsewhere.example"))
    assert refused.value.recipients["victim@elsewhere.example"][0] == 550
    client.post(f"/api/admin/support/tickets/{ticket['id']}/close", headers=ADMIN).raise_for_status()
    send(smtp_port, message("alice@example.com", f"support+{ticket['number']}@{DOMAIN}", body="It broke again."))
    view = client.get(f"/api/admin/support/tickets/{ticket['id']}", headers=ADMIN).json()
    assert view["status"] == "open"
    assert [m.get("event") for m in view["messages"]][-2:] == ["reopened", None]
    assert view["messages"][-1]["message"] == "It broke again."


@pytest.mark.real_services
def test_an_imap_mailbox_is_read_once_in_order(make_container: Callable[..., Container]) -> None:
    if not dovecot.installed():
        pytest.fail("Dovecot is not installed: run `apt-get install -y --no-install-recommends dovecot-imapd` "
                    "(make test does this), or set ZLH_TEST_DOVECOT", pytrace=False)
    server = dovecot.Dovecot().start()
    try:
        container = make_container(workers=("projections",), support_domain=DOMAIN,
                                   inbound_imap_url=server.url, inbound_imap_interval=0.1)
        with TestClient(create_app(container)) as client:
            alice = make_customer(client, "alice@example.com")
            ticket = ticket_of(client, alice)
            address = f"support+{ticket['number']}@{DOMAIN}"
            first = message("alice@example.com", address, body="first reply by IMAP")
            server.append(bytes(first))
            server.append(bytes(message("stranger@example.org", f"support@{DOMAIN}", subject="Hello?")))
            container.start(("mail",))

            def replies() -> list[str]:
                view = client.get(f"/api/support/tickets/{ticket['id']}", headers=alice).json()
                return [m["message"] for m in view["messages"][1:]]

            assert poll(replies, lambda r: r == ["first reply by IMAP"])
            server.append(bytes(message("alice@example.com", address, body="second reply by IMAP")))
            server.append(bytes(first))  # the same message delivered again: recorded once
            poll(replies, lambda r: r == ["first reply by IMAP", "second reply by IMAP"])
            stranger = poll(lambda: [m for m in unmatched(client) if m["subject"] == "Hello?"], bool)
            assert stranger[0]["channel"] == "imap" and stranger[0]["reason"] == "no_ticket_address"
            poll(lambda: container.mail.imap_position(_uidvalidity(server)), lambda uid: uid == 4)
            # A restarted worker starts from the recorded cursor: nothing is read twice.
            container.mail.stop()
            assert container.mail.imap.poll_once() == 0
            assert replies() == ["first reply by IMAP", "second reply by IMAP"]
    finally:
        server.stop()


def _uidvalidity(server: dovecot.Dovecot) -> int:
    import imaplib

    client = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    try:
        client.login(dovecot.USER, dovecot.PASSWORD)
        client.select("INBOX", readonly=True)
        return int(client.untagged_responses["UIDVALIDITY"][0])
    finally:
        client.logout()
