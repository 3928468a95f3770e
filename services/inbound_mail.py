"""Use case: receiving support mail: parse, record once, and put an owner's reply on their ticket.

Both ways mail comes in (our SMTP listener, an IMAP mailbox) hand the raw message to
`receive`. It

1. derives the message's id from its Message-ID (a message without one gets one from its
   bytes): a message recorded already is a duplicate and changes nothing;
2. keeps the raw message in the attachment store (staff can download it as `.eml`), and each
   attachment that passes the same checks as a portal upload (sniffed type, 10 MiB, no
   disguise); refused ones are listed with the reason, and a note on the reply says so;
3. decides (domain.mail.decide) whether it is the ticket owner's reply, and saves in ONE
   transaction the `InboundMail` record, the reply on the ticket (quoted history and
   signature trimmed) and, for IMAP, the mailbox cursor: a crash leaves all or nothing.

Unmatched mail is recorded with its reason and touches no ticket.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import logging
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from typing import Any

from eventsourcing.persistence import IntegrityError

from domain.attachment import MAX_ATTACHMENTS_PER_MESSAGE, AttachmentRefusedError, classify, safe_name
from domain.errors import DomainError
from domain.mail import MATCHED, UNMATCHED, InboundMail, MailboxCursor, decide, mail_id, ticket_number_in
from domain.mail_text import html_to_text, trim_reply
from domain.support import VIA_EMAIL, DuplicateMessageError, SupportTicket
from domain.text import FORBIDDEN
from services.infrastructure.blobs import BlobStore
from services.infrastructure.store import ZLH

log = logging.getLogger(__name__)

#: How much of a message's text is kept on its record, and how much goes on the ticket.
MAX_TEXT = 200_000
MAX_REPLY = 20_000
_ADDRESS_HEADERS = ("to", "cc", "delivered-to", "x-original-to", "envelope-to")


@dataclass(frozen=True)
class ParsedMail:
    message_id: str
    from_address: str
    subject: str
    headers: dict[str, str]
    header_recipients: list[str]
    text: str
    files: list[tuple[str, bytes]]


@dataclass(frozen=True)
class Received:
    """What became of one message."""

    mail_id: str
    outcome: str  # matched | unmatched
    reason: str | None
    ticket_number: str | None
    duplicate: bool
    position: int


def clean(text: str) -> str:
    """Text fit for the log: no control characters (tab, LF, CR kept), no lone surrogates."""
    return FORBIDDEN.sub("", text.replace("\r\n", "\n"))


def parse(raw: bytes) -> ParsedMail:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    headers: dict[str, str] = {}
    for name, value in msg.items():
        headers.setdefault(name.lower(), str(value))
    message_id = (str(msg.get("message-id") or "").strip()
                  or f"<{hashlib.sha256(raw).hexdigest()[:40]}@no-message-id.zlh>")
    from_address = parseaddr(str(msg.get("from") or ""))[1]
    recipients = [addr for _, addr in getaddresses([str(v) for name in _ADDRESS_HEADERS
                                                    for v in (msg.get_all(name) or [])]) if addr]
    text = ""
    plain = msg.get_body(preferencelist=("plain",))
    if plain is not None:
        text = _content(plain)
    else:
        html = msg.get_body(preferencelist=("html",))
        if html is not None:
            text = html_to_text(_content(html))
    files = []
    for part in msg.iter_attachments():
        filename = part.get_filename()
        if part.get_content_maintype() == "multipart" or (filename is None and part.is_attachment() is False):
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            files.append((filename or "attachment", payload))
    return ParsedMail(message_id=clean(message_id)[:998], from_address=clean(from_address)[:320],
                      subject=clean(str(msg.get("subject") or ""))[:998], headers=headers,
                      header_recipients=recipients, text=clean(text)[:MAX_TEXT], files=files)


def _content(part: Any) -> str:
    try:
        return str(part.get_content())
    except (LookupError, ValueError):  # an unknown or lying charset: keep what decodes
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", "replace")


def _attachments(blobs: BlobStore, files: list[tuple[str, bytes]]) -> tuple[list[dict[str, Any]],
                                                                              list[dict[str, str]]]:
    kept: list[dict[str, Any]] = []
    refused: list[dict[str, str]] = []
    for name, data in files:
        clean_name = safe_name(name)
        if len(kept) >= MAX_ATTACHMENTS_PER_MESSAGE:
            refused.append({"name": clean_name, "reason": f"more than {MAX_ATTACHMENTS_PER_MESSAGE} attachments"})
            continue
        try:
            content_type = classify(clean_name, data)
        except AttachmentRefusedError as exc:
            refused.append({"name": clean_name, "reason": exc.message})
            continue
        kept.append({"sha256": blobs.put(data), "name": clean_name, "size": len(data),
                     "content_type": content_type})
    return kept, refused


def _reply_text(trimmed: str, refused: list[dict[str, str]]) -> str:
    text = trimmed if len(trimmed) <= MAX_REPLY else trimmed[:MAX_REPLY] + "\n[…cut: the whole message is kept " \
                                                                           "with the received mail]"
    if refused:
        text += "\n\n" + "\n".join(f"[Attachment not accepted: {r['reason']}]" for r in refused)
    return text or "(empty message)"


def receive(app: ZLH, blobs: BlobStore, domain: str, raw: bytes, envelope_from: str, recipients: list[str],
            channel: str, cursor: MailboxCursor | None = None) -> Received:
    """Record one message for support (idempotent by Message-ID); see the module docstring."""
    parsed = parse(raw)
    mid = mail_id(parsed.message_id)
    all_recipients = list(dict.fromkeys([r.strip().strip("<>") for r in recipients] + parsed.header_recipients))
    for _ in range(50):
        existing = app.find(mid, InboundMail)
        if existing is not None:
            if cursor is not None and cursor.pending_events:
                app.save(cursor)
            return Received(str(mid), existing.outcome, existing.reason, None, True, 0)
        raw_sha = blobs.put(raw)
        attachments, refused = _attachments(blobs, parsed.files)
        trimmed = trim_reply(parsed.text)
        number, addressed = ticket_number_in(all_recipients, domain)
        ticket = app.find(SupportTicket.create_id(number), SupportTicket) if number else None
        if not addressed:
            reason: str | None = "no_ticket_address"
        else:
            reason = decide(ticket.email if ticket else None, parsed.from_address, parsed.headers)
        if ticket is not None and reason is None:
            try:
                ticket.reply(ticket.owner_id, staff=False, message=_reply_text(trimmed, refused),
                             attachments=attachments, via=VIA_EMAIL, ref=f"email:{parsed.message_id}",
                             author_email=parsed.from_address)
            except DuplicateMessageError:
                reason = None  # on the ticket already (recorded by an earlier version): the record says so
                ticket = app.find(ticket.id, SupportTicket)
            except DomainError as exc:
                log.warning("mail %s for ticket %s not put on it: %s", parsed.message_id, number, exc.message)
                reason = "ticket_unavailable"
        outcome = MATCHED if reason is None else UNMATCHED
        mail = InboundMail(message_id=parsed.message_id, channel=channel, envelope_from=clean(envelope_from)[:320],
                           recipients=[clean(r)[:320] for r in all_recipients][:50],
                           from_address=parsed.from_address, subject=parsed.subject, text=parsed.text,
                           trimmed=trimmed, attachments=attachments, refused=refused, raw_sha256=raw_sha,
                           raw_size=len(raw), outcome=outcome, reason=reason,
                           ticket_id=ticket.id if ticket is not None and outcome == MATCHED else None,
                           ticket_number=number)
        aggregates: list[Any] = [mail]
        if outcome == MATCHED and ticket is not None and ticket.pending_events:
            aggregates.append(ticket)
        if cursor is not None and cursor.pending_events:
            aggregates.append(cursor)
        try:
            recordings = app.save(*aggregates)
        except IntegrityError:
            if cursor is not None:  # reload the cursor's version, keep the wanted advance
                wanted = (cursor.uidvalidity, cursor.uid)
                cursor = app.find(cursor.id, MailboxCursor) or MailboxCursor(mailbox=cursor.mailbox)
                cursor.advance(*wanted)
            continue  # the ticket changed meanwhile, or the same message arrived twice at once: look again
        log.info("mail %s from %s: %s%s", parsed.message_id, parsed.from_address, outcome,
                 f" ({reason})" if reason else f" on {number}")
        return Received(str(mid), outcome, reason, number, False, recordings[-1].notification.id)
    raise RuntimeError(f"could not record mail {parsed.message_id} under this much contention")


def dismiss(app: ZLH, mail: InboundMail, by: Any) -> int:
    mail.dismiss(by)
    return app.save(mail)[-1].notification.id
