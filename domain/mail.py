"""Mail that arrives for support: each message recorded once, matched to a ticket or kept for staff.

Every ticket email is sent with `Reply-To: support+NUMBER@ZLH_SUPPORT_DOMAIN`. An arriving
message is a customer reply on ticket NUMBER only when all of these hold (`decide`):

- one of its recipients is `support+NUMBER@` the support domain, and NUMBER is a ticket's
  number (a well-formed number of no ticket is `unknown_ticket`: a guess or a forgery);
- its `From` address is the ticket owner's (case-insensitive): else `sender_mismatch`;
- the operator's MX did not record a failed DMARC/SPF check for it (`Authentication-Results`):
  else `authentication_failed`;
- it is not an automatic message (`Auto-Submitted` other than `no`, `Precedence: bulk|junk|list`,
  out-of-office and delivery reports): else `auto_reply`, so two robots never talk forever.

Anything else is *unmatched mail*: recorded the same way, listed for staff, and never attached
to a ticket. `InboundMail`'s id derives from the Message-ID, so the same message delivered twice
(an MX retry, an IMAP mailbox read again) is recorded once.

`MailboxCursor` remembers, per IMAP mailbox, the UIDVALIDITY and the highest UID read, saved in
the same transaction as the messages it read, so nothing is read twice or skipped.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import IllegalTransitionError
from domain.ids import derive

NUMBER = re.compile(r"ZLH-\d{8}-\d{4}")
#: `support+ZLH-20260301-0001@domain`; the local part's case is kept as sent, compared without case.
_TICKET_ADDRESS = re.compile(r"^support\+(?P<number>[^@]+)@(?P<domain>.+)$", re.IGNORECASE)

MATCHED, UNMATCHED, DISMISSED = "matched", "unmatched", "dismissed"
REASONS = ("no_ticket_address", "unknown_ticket", "sender_mismatch", "authentication_failed", "auto_reply",
           "ticket_unavailable")


def reply_address(number: str, domain: str) -> str:
    """The Reply-To of every email about ticket `number`."""
    return f"support+{number}@{domain}"


def ticket_number_in(recipients: list[str], domain: str) -> tuple[str | None, bool]:
    """(the ticket number a recipient names, whether any recipient was a ticket address at all).

    `(None, True)` is a ticket address whose number is malformed: a forgery, treated as unknown.
    """
    seen = False
    for recipient in recipients:
        match = _TICKET_ADDRESS.match(recipient.strip().strip("<>"))
        if match is None or match.group("domain").lower() != domain.lower():
            continue
        seen = True
        number = match.group("number").upper()
        if NUMBER.fullmatch(number):
            return number, True
    return None, seen


def is_automatic(headers: dict[str, str]) -> bool:
    """An auto-reply, a bulk or list message, or a delivery report (RFC 3834, RFC 3464)."""
    auto = headers.get("auto-submitted", "").strip().lower()
    if auto and auto != "no":
        return True
    if headers.get("precedence", "").strip().lower() in ("bulk", "junk", "list", "auto_reply"):
        return True
    if any(name in headers for name in ("x-autoreply", "x-autorespond", "list-id")):
        return True
    return "report-type=delivery-status" in headers.get("content-type", "").replace(" ", "").lower()


def authentication_failed(headers: dict[str, str]) -> bool:
    """The receiving MX recorded `dmarc=fail` (or `spf=fail` without DKIM passing) for the message."""
    results = headers.get("authentication-results", "").lower()
    if not results:
        return False
    if re.search(r"\bdmarc=fail\b", results):
        return True
    return bool(re.search(r"\bspf=fail\b", results)) and not re.search(r"\bdkim=pass\b", results)


def decide(owner_email: str | None, from_address: str, headers: dict[str, str]) -> str | None:
    """Why a message to an existing ticket's address is not its owner's reply, or None when it is."""
    if owner_email is None:
        return "unknown_ticket"
    if from_address.strip().lower() != owner_email.strip().lower():
        return "sender_mismatch"
    if authentication_failed(headers):
        return "authentication_failed"
    if is_automatic(headers):
        return "auto_reply"
    return None


def mail_id(message_id: str) -> UUID:
    return derive("inbound-mail", message_id.strip())


class InboundMail(Aggregate):
    """One message received for support, as received, and what became of it."""

    TOPIC = "zlh.InboundMail"

    class Event(Aggregate.Event):
        TOPIC = "zlh.InboundMail.Event"

    class Received(Event, Aggregate.Created):
        """`text` is the whole text body; `trimmed` what went on the ticket (or would have);
        `raw_sha256` names the message as received in the attachment store."""

        TOPIC = "zlh.InboundMail.Received"
        message_id: str
        channel: str
        envelope_from: str
        recipients: list[str]
        from_address: str
        subject: str
        text: str
        trimmed: str
        attachments: list[dict[str, Any]]
        refused: list[dict[str, str]]
        raw_sha256: str
        raw_size: int
        outcome: str
        reason: str | None
        ticket_id: UUID | None
        ticket_number: str | None

    class Dismissed(Event):
        TOPIC = "zlh.InboundMail.Dismissed"
        by: UUID

    @staticmethod
    def create_id(message_id: str) -> UUID:
        return mail_id(message_id)

    @event(Received)
    def __init__(self, message_id: str, channel: str, envelope_from: str, recipients: list[str],
                 from_address: str, subject: str, text: str, trimmed: str, attachments: list[dict[str, Any]],
                 refused: list[dict[str, str]], raw_sha256: str, raw_size: int, outcome: str, reason: str | None,
                 ticket_id: UUID | None, ticket_number: str | None) -> None:
        self.message_id = message_id
        self.from_address = from_address
        self.subject = subject
        self.text = text
        self.attachments = list(attachments)
        self.raw_sha256 = raw_sha256
        self.outcome = outcome
        self.reason = reason
        self.ticket_id = ticket_id

    def dismiss(self, by: UUID) -> None:
        if self.outcome != UNMATCHED:
            raise IllegalTransitionError(f"only unmatched mail can be dismissed; this one is {self.outcome}")
        self._dismissed(by=by)

    @event(Dismissed)
    def _dismissed(self, by: UUID) -> None:
        self.outcome = DISMISSED


class MailboxCursor(Aggregate):
    """How far one IMAP mailbox has been read: (UIDVALIDITY, highest UID recorded)."""

    TOPIC = "zlh.MailboxCursor"

    class Event(Aggregate.Event):
        TOPIC = "zlh.MailboxCursor.Event"

    class Started(Event, Aggregate.Created):
        TOPIC = "zlh.MailboxCursor.Started"
        mailbox: str

    class Advanced(Event):
        TOPIC = "zlh.MailboxCursor.Advanced"
        uidvalidity: int
        uid: int

    @staticmethod
    def create_id(mailbox: str) -> UUID:
        return derive("mailbox-cursor", mailbox)

    @event(Started)
    def __init__(self, mailbox: str) -> None:
        self.mailbox = mailbox
        self.uidvalidity = 0
        self.uid = 0

    def after(self, uidvalidity: int) -> int:
        """The highest UID already read under `uidvalidity` (0: read the mailbox from the start)."""
        return self.uid if uidvalidity == self.uidvalidity else 0

    def advance(self, uidvalidity: int, uid: int) -> None:
        if uidvalidity == self.uidvalidity and uid <= self.uid:
            return
        self._advanced(uidvalidity=uidvalidity, uid=uid)

    @event(Advanced)
    def _advanced(self, uidvalidity: int, uid: int) -> None:
        self.uidvalidity = uidvalidity
        self.uid = uid
