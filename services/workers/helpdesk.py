"""The helpdesk sync: ZLH's tickets mirrored both ways with a self-hosted helpdesk (Zammad).

ZLH's own ticket stream stays the record; the helpdesk is a second screen for staff who live in it.

Outbound, as a process manager following the log (`LogFollower` "helpdesk"): a ticket opened in ZLH
becomes a Zammad ticket tagged and titled with our number; each reply and internal note becomes an
article (internal notes stay internal there too); closing and reopening set the Zammad state. Every
push observes before it acts: the ticket is looked up by our number and each article by the
Message-ID we give it (`<zlh-TICKET-VERSION@ZLH_SUPPORT_DOMAIN>`) before anything is created, and the
ids Zammad gave are recorded on our ticket (`HelpdeskLinked`, `HelpdeskMessageLinked`). A crash
between creating and recording therefore links what exists on the next try instead of creating it
twice, and replaying the log from 0 creates nothing.

Inbound, every `ZLH_HELPDESK_INTERVAL`: for each linked ticket, the articles Zammad has that we did
not write become messages on our ticket (`via: zammad`, `ref: zammad:article:ID`, recorded once): an
agent's public article a staff reply (which ZLH mails to the customer, with the ticket's Reply-To),
an internal one an internal note, a customer's a customer reply; a Zammad ticket closed there closes
ours. Articles are imported as text; their attachments are named in the message (kept in Zammad).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification

from domain.errors import DomainError
from domain.ids import derive
from domain.mail_text import html_to_text
from domain.support import CLOSED, DuplicateMessageError, SupportTicket
from domain.user import User
from projections.base import Database
from services.adapters.zammad import HelpdeskError, ZammadClient
from services.infrastructure.blobs import BlobStore
from services.infrastructure.log_following import LogFollower, Wakeup
from services.infrastructure.store import ZLH
from services.settings import Settings
from services.support import change

log = logging.getLogger(__name__)

POSITION = "helpdesk"
SYSTEM = "zammad"
TOPICS = (SupportTicket.Opened.TOPIC, SupportTicket.Replied.TOPIC, SupportTicket.NoteAdded.TOPIC,
          SupportTicket.Closed.TOPIC, SupportTicket.Reopened.TOPIC)


def build_helpdesk_sync(app: ZLH, db: Any, settings: Settings, blobs: BlobStore | None = None) -> HelpdeskSync:
    if settings.helpdesk != "zammad":
        raise NotImplementedError(f"ZLH_HELPDESK={settings.helpdesk} is not built yet; use zammad")
    if not settings.helpdesk_url or not settings.helpdesk_token:
        raise ValueError("ZLH_HELPDESK=zammad needs ZLH_HELPDESK_URL and ZLH_HELPDESK_TOKEN")
    from pathlib import Path

    client = ZammadClient(settings.helpdesk_url, settings.helpdesk_token, settings.helpdesk_group)
    return HelpdeskSync(app, db, client, blobs or BlobStore(Path(settings.data_dir) / "attachments"),
                        settings.support_domain, settings.helpdesk_interval)


class HelpdeskSync:
    def __init__(self, app: ZLH, db: Any, client: ZammadClient, blobs: BlobStore, domain: str,
                 interval: float = 30.0) -> None:
        self.app, self.db, self.client, self.blobs = app, db, client, blobs
        self.domain = domain
        self.interval = interval
        self.stop_event = threading.Event()
        self._last_poll = 0.0
        self.follower = LogFollower(POSITION, app, db, self._handle, topics=TOPICS, after_drain=self._maybe_poll)

    # Outbound.

    def message_id(self, ticket_id: UUID, version: int) -> str:
        return f"<zlh-{ticket_id}-{version}@{self.domain}>"

    def _handle(self, notification: Notification) -> None:
        event = self.app.mapper.to_domain_event(notification)
        if getattr(event, "via", None) == SYSTEM:
            return  # it came from the helpdesk: it is there already
        ticket = self.app.find(event.originator_id, SupportTicket)
        if ticket is None:
            return
        remote = self.ensure_ticket(ticket)
        if isinstance(event, SupportTicket.Opened):
            return
        if isinstance(event, SupportTicket.Replied | SupportTicket.NoteAdded):
            self.push_message(ticket.id, remote, event)
        elif isinstance(event, SupportTicket.Closed):
            self.client.set_state(remote, "closed")
        elif isinstance(event, SupportTicket.Reopened):
            self.client.set_state(remote, "open")

    def _files(self, attachments: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for a in attachments:
            if self.blobs.exists(a["sha256"]):
                out.append(ZammadClient.attachment(a["name"], self.blobs.read(a["sha256"]), a["content_type"]))
        return out

    def ensure_ticket(self, ticket: SupportTicket) -> str:
        """Zammad's id of our ticket: linked already, found by our number, or created (with our first message)."""
        remote = ticket.helpdesk.get(SYSTEM)
        if remote is not None:
            return remote
        found = self.client.find_ticket(ticket.number)
        if found is None:
            found = self.client.create_ticket(ticket.number, ticket.subject, ticket.email, ticket.message,
                                              self.message_id(ticket.id, 1), self._files(ticket.attachments))
            log.info("helpdesk: ticket %s created in zammad as #%s", ticket.number, found.get("number"))
        remote = str(found["id"])
        first = next((a for a in self.client.articles(remote)
                      if a.get("message_id") == self.message_id(ticket.id, 1)), None)

        def link(t: SupportTicket) -> None:
            t.link_helpdesk(SYSTEM, remote, str(found.get("number")) if found.get("number") else None)
            if first is not None:
                t.link_helpdesk_message(SYSTEM, 1, str(first["id"]))

        change(self.app, ticket.id, None, link)
        return remote

    def push_message(self, ticket_id: UUID, remote: str, event: Any) -> None:
        ticket = self.app.find(ticket_id, SupportTicket)
        assert ticket is not None
        version = event.originator_version
        if version in ticket.helpdesk_messages.get(SYSTEM, {}):
            return
        marker = self.message_id(ticket_id, version)
        existing = next((a for a in self.client.articles(remote) if a.get("message_id") == marker), None)
        if existing is None:
            note = isinstance(event, SupportTicket.NoteAdded)
            body = event.note if note else event.message
            sender = "Agent" if note or event.staff else "Customer"
            existing = self.client.create_article(remote, body, internal=note, sender=sender, message_id=marker,
                                                  attachments=self._files(event.attachments))
        remote_id = str(existing["id"])
        change(self.app, ticket_id, None, lambda t: t.link_helpdesk_message(SYSTEM, version, remote_id))

    # Inbound.

    def _maybe_poll(self) -> None:
        now = time.monotonic()
        if now - self._last_poll >= self.interval:
            self._last_poll = now
            self.poll()

    def linked_tickets(self) -> list[str]:
        db: Database = self.db
        return [r["id"] for r in db.query("SELECT id FROM rm_tickets WHERE helpdesk_id LIKE %s",
                                          (f"{SYSTEM}:%",))]

    def poll(self) -> int:
        """Import what changed in the helpdesk on every linked ticket; return how many changes were recorded."""
        recorded = 0
        for ticket_id in self.linked_tickets():
            ticket = self.app.find(UUID(ticket_id), SupportTicket)
            if ticket is None or SYSTEM not in ticket.helpdesk:
                continue
            try:
                recorded += self.pull(ticket)
            except HelpdeskError as exc:
                log.warning("helpdesk: ticket %s not read: %s", ticket.number, exc)
        return recorded

    def _author(self, article: dict[str, Any]) -> tuple[UUID, str | None]:
        """The ZLH user behind a Zammad article, by address (an operator's own account when there is one)."""
        sender = str(article.get("created_by") or article.get("from") or "zammad")
        email = sender if "@" in sender else None
        if email:
            user = self.app.find(User.create_id(email), User)
            if user is not None and user.admin:
                return user.id, email
        return derive("helpdesk-user", SYSTEM, sender), email or f"{sender} (zammad)"

    def pull(self, ticket: SupportTicket) -> int:
        remote = ticket.helpdesk[SYSTEM]
        known = ticket.remote_message_ids(SYSTEM)
        ours = f"@{self.domain}>"
        recorded = 0
        for article in sorted(self.client.articles(remote), key=lambda a: int(a["id"])):
            article_id = str(article["id"])
            message_id = str(article.get("message_id") or "")
            if article_id in known or (message_id.startswith("<zlh-") and message_id.endswith(ours)):
                continue
            recorded += self._import(ticket.id, article)
        there = self.client.ticket(remote)
        state = str(there.get("state") or "")
        current = self.app.find(ticket.id, SupportTicket)
        if state == "closed" and current is not None and current.status != CLOSED \
                and _changed_after(there.get("updated_at"), current.modified_on):
            actor = derive("helpdesk-user", SYSTEM, "state")
            change(self.app, ticket.id, None, lambda t: t.close(actor) if t.status != CLOSED else None)
            recorded += 1
        return recorded

    def _import(self, ticket_id: UUID, article: dict[str, Any]) -> int:
        body = str(article.get("body") or "")
        text = html_to_text(body) if str(article.get("content_type", "")).startswith("text/html") else body
        names = [a.get("filename") for a in article.get("attachments") or [] if a.get("filename")]
        if names:
            text += "\n\n" + "\n".join(f"[Attachment kept in Zammad: {n}]" for n in names)
        text = text.strip() or "(empty article)"
        author, email = self._author(article)
        ref = f"{SYSTEM}:article:{article['id']}"
        internal = bool(article.get("internal"))
        customer = str(article.get("sender")) == "Customer"

        def record(t: SupportTicket) -> None:
            if t.has_ref(ref):
                return
            if internal:
                t.add_note(author, text, via=SYSTEM, ref=ref, author_email=email)
            elif customer:
                t.reply(t.owner_id, staff=False, message=text, via=SYSTEM, ref=ref, author_email=email)
            else:
                t.reply(author, staff=True, message=text, via=SYSTEM, ref=ref, author_email=email)

        try:
            _, position, _ = change(self.app, ticket_id, None, record)
        except DuplicateMessageError:
            return 0
        except DomainError as exc:  # e.g. a staff article on a ticket closed here: record it as a note instead
            log.info("helpdesk: article %s imported as a note: %s", article["id"], exc.message)
            why = exc.message

            def as_note(t: SupportTicket) -> None:
                if not t.has_ref(ref):
                    t.add_note(author, f"(from Zammad, not sent: {why})\n{text}", via=SYSTEM, ref=ref,
                               author_email=email)

            _, position, _ = change(self.app, ticket_id, None, as_note)
        return 1 if position else 0

    def run(self, wakeup: Wakeup) -> None:
        self.follower.run(self.stop_event, wakeup)

    def position(self) -> int:
        return self.follower.position()


def _changed_after(remote_updated_at: Any, ours: datetime) -> bool:
    """Whether Zammad's ticket changed after ours did: a close there is imported only then. A ticket
    reopened here after it was closed there stays open (the reopen is pushed next), instead of being
    closed again by a poll that read Zammad's state just before the reopen was pushed."""
    if not remote_updated_at:
        return True
    try:
        there = datetime.fromisoformat(str(remote_updated_at).replace("Z", "+00:00"))
    except ValueError:
        return True
    return there >= ours
