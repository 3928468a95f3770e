"""The inbound mail worker: our SMTP listener and/or the IMAP poller, recording what arrives.

Runs in `zlh serve` (embedded mode) and as `zlh worker mail` (its own systemd unit,
`zlh-worker@mail`). With neither `ZLH_INBOUND_SMTP` nor `ZLH_INBOUND_IMAP_URL` set it does
nothing: ticket emails still carry their Reply-To, and replies wait at the MX.
"""

from __future__ import annotations

import logging
import threading

from domain.mail import MailboxCursor
from services.adapters.mail_inbound import ImapPoller, SmtpListener
from services.inbound_mail import Received, receive
from services.infrastructure.blobs import BlobStore
from services.infrastructure.store import ZLH

log = logging.getLogger(__name__)


class MailWorker:
    def __init__(self, app: ZLH, blobs: BlobStore, domain: str, smtp_address: str | None = None,
                 imap_url: str | None = None, imap_interval: float = 30.0) -> None:
        self.app, self.blobs, self.domain = app, blobs, domain
        self.smtp = SmtpListener(smtp_address, domain, self.deliver_smtp) if smtp_address else None
        self.imap = ImapPoller(imap_url, self.deliver_imap, self.imap_position,
                               interval=imap_interval) if imap_url else None
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def deliver_smtp(self, raw: bytes, envelope_from: str, recipients: list[str]) -> Received:
        return receive(self.app, self.blobs, self.domain, raw, envelope_from, recipients, "smtp")

    def _cursor(self) -> MailboxCursor:
        assert self.imap is not None
        name = self.imap.mailbox.name
        return self.app.find(MailboxCursor.create_id(name), MailboxCursor) or MailboxCursor(mailbox=name)

    def imap_position(self, uidvalidity: int) -> int:
        return self._cursor().after(uidvalidity)

    def deliver_imap(self, raw: bytes, uidvalidity: int, uid: int) -> Received:
        cursor = self._cursor()
        cursor.advance(uidvalidity, uid)
        return receive(self.app, self.blobs, self.domain, raw, "", [], "imap", cursor=cursor)

    def start(self) -> None:
        if self.smtp is not None:
            self.smtp.start()
        if self.imap is not None:
            self.imap.stop_event = self.stop_event
            self._thread = threading.Thread(target=self.imap.run, name="zlh-mail-imap", daemon=True)
            self._thread.start()
        if self.smtp is None and self.imap is None:
            log.info("inbound mail: neither ZLH_INBOUND_SMTP nor ZLH_INBOUND_IMAP_URL is set; not receiving")

    def stop(self) -> None:
        self.stop_event.set()
        if self.smtp is not None:
            self.smtp.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
