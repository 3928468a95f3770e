"""Inbound support mail: an SMTP listener (aiosmtpd) and an IMAP mailbox poller (imaplib).

Both hand every message to a `deliver(raw, envelope_from, recipients, cursor)` callable
(services.inbound_mail.receive, wired in services.bootstrap) and only let go of a message once
it returned, so nothing is lost:

- `SmtpListener` (`ZLH_INBOUND_SMTP=host:port`) sits behind the operator's MX. It accepts mail
  for addresses at `ZLH_SUPPORT_DOMAIN` only (any other recipient: `550 5.7.1`, it relays
  nothing), answers `250` once the message is recorded, and `451 4.3.0` when recording failed
  (the MX keeps the message and tries again; the Message-ID makes that retry harmless). Messages
  larger than 32 MiB are refused by the protocol (`552`).
- `ImapPoller` (`ZLH_INBOUND_IMAP_URL=imap[s]://user:password@host[:port]/MAILBOX`, default
  mailbox INBOX) opens the mailbox read-only every `ZLH_INBOUND_IMAP_INTERVAL`, fetches the
  messages with a UID above the last one recorded (UIDVALIDITY checked: a new one reads the
  mailbox from the start, harmlessly), oldest first, and records each together with the advanced
  cursor. It never deletes or flags anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import logging
import re
import ssl
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger(__name__)

Deliver = Callable[[bytes, str, list[str]], Any]
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


def parse_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"ZLH_INBOUND_SMTP must be host:port, not {value!r}")
    return host, int(port)


class _Handler:
    def __init__(self, deliver: Deliver, domain: str) -> None:
        self.deliver = deliver
        self.domain = domain.lower()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address.rpartition("@")[2].lower() != self.domain:
            return "550 5.7.1 relaying denied: this server only takes mail for support"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, self.deliver, bytes(raw), str(envelope.mail_from or ""), list(envelope.rcpt_tos))
        except Exception:
            log.exception("inbound mail from %s could not be recorded; the sender will retry", envelope.mail_from)
            return "451 4.3.0 could not record the message now; try again later"
        return "250 2.0.0 message recorded"


class SmtpListener:
    """An SMTP server for support mail on `host:port`, in its own thread (aiosmtpd's Controller)."""

    def __init__(self, address: str, domain: str, deliver: Deliver) -> None:
        host, port = parse_host_port(address)
        self.controller = Controller(_Handler(deliver, domain), hostname=host, port=port,
                                     server_hostname=domain, data_size_limit=MAX_MESSAGE_BYTES,
                                     ready_timeout=10.0)
        self.host, self.port = host, port

    def start(self) -> None:
        self.controller.start()
        log.info("inbound SMTP listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.controller.stop()


class ImapMailbox:
    """Where an IMAP URL points: scheme, host, port, credentials and mailbox (never logged with the password)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("imap", "imaps"):
            raise ValueError("ZLH_INBOUND_IMAP_URL must start with imap:// or imaps://")
        if not parts.hostname or parts.username is None:
            raise ValueError("ZLH_INBOUND_IMAP_URL needs user:password@host")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"ZLH_INBOUND_IMAP_URL has a bad port: {exc}") from None
        self.tls = parts.scheme == "imaps"
        self.host = parts.hostname
        self.port = port or (993 if self.tls else 143)
        self.user = unquote(parts.username)
        self.password = unquote(parts.password or "")
        self.mailbox = unquote(parts.path.lstrip("/")) or "INBOX"

    @property
    def name(self) -> str:
        """Identifies the mailbox (its cursor's key): no password."""
        return f"{'imaps' if self.tls else 'imap'}://{self.user}@{self.host}:{self.port}/{self.mailbox}"


_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")


class ImapPoller:
    """Reads new messages from one IMAP mailbox; `deliver(raw, uidvalidity, uid)` records each."""

    def __init__(self, url: str, deliver: Callable[[bytes, int, int], Any], after: Callable[[int], int],
                 interval: float = 30.0, timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.mailbox = ImapMailbox(url)
        self.deliver = deliver
        self.after = after  # uidvalidity -> the highest UID recorded under it
        self.interval = interval
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.stop_event = threading.Event()

    def _connect(self) -> imaplib.IMAP4:
        m = self.mailbox
        if m.tls:
            return imaplib.IMAP4_SSL(m.host, m.port, ssl_context=self.ssl_context or ssl.create_default_context(),
                                     timeout=self.timeout)
        return imaplib.IMAP4(m.host, m.port, timeout=self.timeout)

    def poll_once(self) -> int:
        """Record every message not recorded yet; return how many were handed over."""
        client = self._connect()
        try:
            client.login(self.mailbox.user, self.mailbox.password)
            status, data = client.select(_quote(self.mailbox.mailbox), readonly=True)
            if status != "OK":
                raise RuntimeError(f"IMAP SELECT {self.mailbox.mailbox} failed: {data!r}")
            validity = client.untagged_responses.get("UIDVALIDITY", [b"0"])[0]
            uidvalidity = int(validity if isinstance(validity, bytes | str) else b"0")
            last = self.after(uidvalidity)
            status, data = client.uid("SEARCH", None, f"UID {last + 1}:*")
            if status != "OK":
                raise RuntimeError(f"IMAP UID SEARCH failed: {data!r}")
            uids = sorted(int(u) for u in (data[0] or b"").split() if int(u) > last)  # n:* always names the last
            for uid in uids:
                status, fetched = client.uid("FETCH", str(uid), "(BODY.PEEK[])")
                raw = next((item[1] for item in fetched if isinstance(item, tuple)), None)
                if status != "OK" or raw is None:
                    raise RuntimeError(f"IMAP UID FETCH {uid} failed: {status}")
                self.deliver(raw, uidvalidity, uid)
            return len(uids)
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def run(self) -> None:
        log.info("polling IMAP mailbox %s every %.0fs", self.mailbox.name, self.interval)
        while not self.stop_event.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # the mailbox may be down: try again next round
                log.warning("IMAP mailbox %s: %s: %s", self.mailbox.name, type(exc).__name__,
                            str(exc).replace(self.mailbox.password, "***") if self.mailbox.password else exc)
            self.stop_event.wait(self.interval)


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'
